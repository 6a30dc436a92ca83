"""Configuration of the SIDR retriever, beside its model as transformers lays models out."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


@strict
class SIDRConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SIDRModel`].

    Args:
        encoder_config (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the BERT-style encoder(s). Query and passage encoders share the architecture; their
            weights are separate unless `shared_encoder=True`. Defaults to the bert-base-uncased configuration.
        shared_encoder (`bool`, *optional*, defaults to `False`):
            Use one encoder (and one LayerNorm) for queries and passages.
        max_active_dims (`int`, *optional*, defaults to 768):
            Number of vocabulary dimensions kept in each embedding (top-k sparsification), as sentence-transformers'
            `SparseEncoder(max_active_dims=...)`.
        activate_lexical (`bool`, *optional*, defaults to `False`):
            Also keep every dimension of a token present in the text (top-k ∪ bag of tokens), as the original SiDR
            `embed(activate_lexical=True)` does.
        query_max_length (`int`, *optional*, defaults to 128):
            Maximum number of tokens of a query.
        passage_max_length (`int`, *optional*, defaults to 256):
            Maximum number of tokens of a passage.
        zeroed_token_ids (`list[int]`, *optional*):
            Vocabulary dimensions forced to zero (special and `[unusedN]` tokens). Derived from the tokenizer by
            [`SIDRModel.from_encoder`].
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the per-encoder LayerNorm before the vocabulary projection (`nn.LayerNorm`'s default, as the original).
    """

    model_type = "sidr"
    # Configurations saved before the field took sentence-transformers' name still load.
    attribute_map = {"topk": "max_active_dims"}
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder_config: dict | PreTrainedConfig | None = None
    shared_encoder: bool = False
    max_active_dims: int | None = None  # 768 when neither it nor the old `topk` is given
    activate_lexical: bool = False
    query_max_length: int = 128
    passage_max_length: int = 256
    zeroed_token_ids: list[int] | None = None
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        old = kwargs.pop("topk", None)
        # The field defaults to None so that one given explicitly, even as 768, can be told from one left out.
        if old is not None and self.max_active_dims not in (None, old):
            raise ValueError(
                f"SIDRConfig got topk={old} and max_active_dims={self.max_active_dims}: topk is the old name of "
                "max_active_dims. Give max_active_dims only."
            )
        if self.max_active_dims is None:
            self.max_active_dims = 768 if old is None else old
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        if self.max_active_dims < 1:
            raise ValueError(f"max_active_dims must be at least 1, got {self.max_active_dims}.")
        if self.query_max_length < 2 or self.passage_max_length < 2:
            raise ValueError("query_max_length and passage_max_length must be at least 2 (room for [CLS] and [SEP]).")

    @property
    def vocab_size(self) -> int:
        return self.encoder_config.vocab_size
