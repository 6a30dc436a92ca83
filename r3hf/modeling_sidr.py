"""SIDR: the semi-parametric retriever that R3 trains (a SiDR / VDR bi-encoder in vocabulary space)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

Text = str | dict

QUERY, PASSAGE = "query", "passage"


def elu1p(x: torch.Tensor) -> torch.Tensor:
    """`ELU(x) + 1`: a smooth, strictly positive activation used instead of a softmax over the vocabulary."""
    return F.elu(x) + 1


def topk_sparsify(embeds: torch.Tensor, k: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the `k` largest values of each row (and, when given, every dimension where `keep` is true).

    Gradients flow to the kept values only.
    """
    if k >= embeds.shape[-1]:
        return embeds
    mask = torch.zeros_like(embeds, dtype=torch.bool)
    mask.scatter_(-1, embeds.topk(k, dim=-1).indices, True)
    if keep is not None:
        mask |= keep.bool()
    return embeds * mask


def default_zeroed_token_ids(tokenizer) -> list[int]:
    """The special tokens and `[unusedN]` placeholders of a tokenizer: vocabulary dimensions that carry no meaning."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for token, i in tokenizer.get_vocab().items() if token.startswith("[unused") and token.endswith("]"))
    return sorted(ids)


def passage_to_text(passage: Text) -> str:
    """Join a `{"title", "text"}` passage as the original SiDR code does (`"title [SEP] text"`), or check a string."""
    if isinstance(passage, str):
        return passage
    if isinstance(passage, dict) and "text" in passage:
        title = passage.get("title") or ""
        return f"{title} [SEP] {passage['text']}" if title else passage["text"]
    raise TypeError(
        f"Each passage must be a string or a dict with a 'text' key (and optionally 'title'); got {type(passage).__name__}."
    )


def check_texts(texts: Sequence[Text] | str, allow_dicts: bool = False) -> list[str]:
    """Validate a batch of texts and return it as a list of strings."""
    if isinstance(texts, str | dict):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("Got an empty list of texts: pass at least one string.")
    out = []
    for i, text in enumerate(texts):
        if allow_dicts:
            out.append(passage_to_text(text))
        elif isinstance(text, str):
            out.append(text)
        else:
            raise TypeError(f"Item {i} is a {type(text).__name__}, not a string: pass a list of strings.")
    return out


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
        topk (`int`, *optional*, defaults to 768):
            Number of vocabulary dimensions kept in each embedding (top-k sparsification).
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
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder_config: dict | PreTrainedConfig | None = None
    shared_encoder: bool = False
    topk: int = 768
    activate_lexical: bool = False
    query_max_length: int = 128
    passage_max_length: int = 256
    zeroed_token_ids: list[int] | None = None
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False

    def validate_architecture(self):
        if self.topk < 1:
            raise ValueError(f"topk must be at least 1, got {self.topk}.")
        if self.query_max_length < 2 or self.passage_max_length < 2:
            raise ValueError("query_max_length and passage_max_length must be at least 2 (room for [CLS] and [SEP]).")

    @property
    def vocab_size(self) -> int:
        return self.encoder_config.vocab_size


@dataclass
class SIDROutput(ModelOutput):
    """Output of [`SIDRModel.forward`]: top-k embeddings E(x) and bags of tokens T(x) of both sides, `[batch, V]`."""

    query_embeds: torch.Tensor | None = None
    passage_embeds: torch.Tensor | None = None
    query_bag_of_tokens: torch.Tensor | None = None
    passage_bag_of_tokens: torch.Tensor | None = None


def _encoder_kwargs(config: PreTrainedConfig) -> dict:
    """BERT-style encoders are built without their pooler, which SIDR does not use."""
    model_class = AutoModel._model_mapping[type(config)]
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class).parameters else {}


def _build_encoder(config: PreTrainedConfig) -> PreTrainedModel:
    return AutoModel._model_mapping[type(config)](config, **_encoder_kwargs(config))


class SIDRModel(PreTrainedModel):
    """A SiDR retriever: texts → non-negative, top-k sparse vectors over the tokenizer's vocabulary.

    Each token's last hidden state goes through a LayerNorm and is projected on the encoder's word-embedding matrix;
    `elu1p` makes the logits positive; a max over the non-padding tokens gives one `|V|` vector, whose special-token
    dimensions are zeroed and which keeps its `topk` largest values. A text's bag of tokens `T(x)` is the binary
    vector of the (non-special) tokens it contains.

    The tokenizer is kept beside the weights (`model.tokenizer`) and saved with them.
    """

    config_class = SIDRConfig
    base_model_prefix = "sidr"
    main_input_name = "query_input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = []

    def __init__(self, config: SIDRConfig, tokenizer=None):
        super().__init__(config)
        self.query_encoder = _build_encoder(config.encoder_config)
        self.query_norm = nn.LayerNorm(config.encoder_config.hidden_size, eps=config.layer_norm_eps)
        if config.shared_encoder:
            self.passage_encoder, self.passage_norm = None, None
        else:
            self.passage_encoder = _build_encoder(config.encoder_config)
            self.passage_norm = nn.LayerNorm(config.encoder_config.hidden_size, eps=config.layer_norm_eps)
        keep = torch.ones(config.vocab_size)
        if config.zeroed_token_ids:
            keep[torch.tensor(config.zeroed_token_ids, dtype=torch.long)] = 0
        self.register_buffer("vocab_keep_mask", keep, persistent=False)
        self.tokenizer = tokenizer
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:
            keep = torch.ones(self.config.vocab_size, device=self.vocab_keep_mask.device)
            if self.config.zeroed_token_ids:
                keep[torch.tensor(self.config.zeroed_token_ids, dtype=torch.long)] = 0
            self.vocab_keep_mask.copy_(keep)

    # ------------------------------------------------------------------ construction and persistence

    @classmethod
    def from_encoder(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        shared_encoder: bool = False,
        topk: int = 768,
        tokenizer=None,
        **kwargs,
    ) -> SIDRModel:
        """Initialise both encoders from any BERT-style encoder (with or without an MLM head) on the Hub or on disk.

        Args:
            pretrained_model_name_or_path: Hub id or local folder of the encoder.
            shared_encoder: Use a single encoder for queries and passages.
            topk: Dimensions kept per embedding.
            tokenizer: A tokenizer or its path; defaults to the encoder's own.
            **kwargs: Further [`SIDRConfig`] fields (`query_max_length`, `activate_lexical`, ...).
        """
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained_model_name_or_path)
        encoder_config = AutoConfig.from_pretrained(pretrained_model_name_or_path)
        encoder = AutoModel.from_pretrained(pretrained_model_name_or_path, **_encoder_kwargs(encoder_config))
        if len(tokenizer) > encoder_config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the encoder's vocabulary has "
                f"{encoder_config.vocab_size}: use the encoder's own tokenizer."
            )
        kwargs.setdefault("zeroed_token_ids", default_zeroed_token_ids(tokenizer))
        config = SIDRConfig(
            encoder_config=encoder_config.to_dict(), shared_encoder=shared_encoder, topk=topk, **kwargs
        )
        model = cls(config, tokenizer=tokenizer)
        state = encoder.state_dict()
        for target in filter(None, (model.query_encoder, model.passage_encoder)):
            missing, _ = target.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"{pretrained_model_name_or_path} lacks encoder weights {missing[:5]}.")
        model.config.name_or_path = str(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """Save weights (safetensors), config and the tokenizer to `save_directory`."""
        kwargs["safe_serialization"] = True
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None and int(os.environ.get("LOCAL_RANK", "0")) == 0:
            self.tokenizer.save_pretrained(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> SIDRModel:
        """Load a retriever and its tokenizer from a local folder or a Hub repo (safetensors weights only)."""
        kwargs["use_safetensors"] = True
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
        model.tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        return model

    # ------------------------------------------------------------------ core math

    def _encoder(self, side: str) -> tuple[PreTrainedModel, nn.LayerNorm]:
        if side == QUERY or self.config.shared_encoder:
            return self.query_encoder, self.query_norm
        return self.passage_encoder, self.passage_norm

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, side: str = QUERY) -> torch.Tensor:
        """E(x): top-k sparsified vocabulary embeddings `[batch, V]` of tokenized texts, with gradients."""
        encoder, norm = self._encoder(side)
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = norm(hidden) @ encoder.get_input_embeddings().weight.t()
        # elu1p is monotonic, so max-pooling the logits and then applying it equals the original max of elu1p, and
        # skips a second [batch, length, V] tensor. Padding positions are excluded from the max.
        # In place: the matmul's backward does not need its output, and this tensor is the largest one by far.
        logits.masked_fill_(~attention_mask.bool().unsqueeze(-1), float("-inf"))
        embeds = elu1p(logits.amax(dim=1)) * self.vocab_keep_mask
        keep = self._bag_of_tokens_ids(input_ids, attention_mask) if self.config.activate_lexical else None
        return topk_sparsify(embeds, self.config.topk, keep)

    def _bag_of_tokens_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bag = torch.zeros(input_ids.shape[0], self.config.vocab_size, device=input_ids.device)
        bag.scatter_reduce_(1, input_ids, attention_mask.to(bag.dtype), reduce="amax")
        return bag * self.vocab_keep_mask.to(bag.device)

    def forward(
        self,
        query_input_ids: torch.Tensor | None = None,
        query_attention_mask: torch.Tensor | None = None,
        passage_input_ids: torch.Tensor | None = None,
        passage_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> SIDROutput:
        """Embed tokenized queries and/or passages for training: E(x) with gradients and the bag of tokens T(x)."""
        out = SIDROutput()
        for side, ids, mask in (
            (QUERY, query_input_ids, query_attention_mask),
            (PASSAGE, passage_input_ids, passage_attention_mask),
        ):
            if ids is None:
                continue
            mask = torch.ones_like(ids) if mask is None else mask
            out[f"{side}_embeds"] = self.embed(ids, mask, side)
            out[f"{side}_bag_of_tokens"] = self._bag_of_tokens_ids(ids, mask)
        return out

    # ------------------------------------------------------------------ text API

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "This SIDRModel has no tokenizer: set `model.tokenizer = AutoTokenizer.from_pretrained(...)`."
            )
        return self.tokenizer

    def tokenize(self, texts: Sequence[Text] | str, side: str = QUERY) -> dict[str, torch.Tensor]:
        """Tokenize texts for one side (passages may be `{"title","text"}` dicts), truncated to that side's length."""
        if side not in (QUERY, PASSAGE):
            raise ValueError(f"side must be 'query' or 'passage', got {side!r}.")
        texts = check_texts(texts, allow_dicts=side == PASSAGE)
        max_length = self.config.query_max_length if side == QUERY else self.config.passage_max_length
        enc = self._require_tokenizer()(
            texts,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def _batches(self, texts: list, batch_size: int, show_progress_bar: bool | None, desc: str) -> Iterator[list]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        starts = range(0, len(texts), batch_size)
        disable = not show_progress_bar if show_progress_bar is not None else len(starts) < 4
        for start in tqdm(starts, desc=desc, disable=disable):
            yield texts[start : start + batch_size]

    @torch.no_grad()
    def _encode(self, texts, side: str, batch_size: int, show_progress_bar: bool | None) -> torch.Tensor:
        texts = check_texts(texts, allow_dicts=side == PASSAGE)
        # Longest first, so each batch pads to texts of similar length; the result is put back in input order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        was_training = self.training
        self.eval()
        try:
            out = [
                self.embed(**self.tokenize(batch, side), side=side).float()
                for batch in self._batches(
                    [texts[i] for i in order],
                    batch_size,
                    show_progress_bar,
                    "Encoding queries" if side == "query" else "Encoding passages",
                )
            ]
        finally:
            self.train(was_training)
        embeds = torch.cat(out)
        return embeds[torch.argsort(torch.tensor(order, device=embeds.device))]

    def encode_queries(
        self, texts: Sequence[str] | str, batch_size: int = 32, show_progress_bar: bool | None = None
    ) -> torch.Tensor:
        """E(q) of queries: a `[n, V]` float tensor on the model's device, top-k sparse, non-negative."""
        return self._encode(texts, QUERY, batch_size, show_progress_bar)

    def encode_passages(
        self, texts: Sequence[Text] | Text, batch_size: int = 32, show_progress_bar: bool | None = None
    ) -> torch.Tensor:
        """E(d) of passages (strings, or `{"title","text"}` dicts): a `[n, V]` float tensor on the model's device."""
        return self._encode(texts, PASSAGE, batch_size, show_progress_bar)

    encode_query = encode_queries
    encode_document = encode_passages

    def bag_of_tokens(self, texts: Sequence[Text] | Text, side: str = PASSAGE) -> torch.Tensor:
        """T(x): binary `[n, V]` vectors of the tokens each text contains (truncated as that side is), no model needed."""
        enc = self.tokenize(texts, side)
        return self._bag_of_tokens_ids(enc["input_ids"], enc["attention_mask"])

    def retrieve(
        self, queries: Sequence[str] | str, index, k: int = 10, rerank_top_m: int = 100, batch_size: int = 32
    ):
        """Retrieve the top-`k` corpus passages of each query; late-parametric on a `BagOfTokensIndex` (top
        `rerank_top_m` by E(q)·T(d), re-ranked by fresh E(q)·E(d)), plain search on a `SparseEmbeddingIndex`.
        Returns `SearchResults(ids, scores)`; see [`r3hf.retrieval.retrieve`]."""
        from .retrieval import retrieve

        return retrieve(self, queries, index, k=k, rerank_top_m=rerank_top_m, batch_size=batch_size)

    def explain(self, query: str, passage: Text, top: int = 20) -> list[tuple[str, float, float, float]]:
        """The vocabulary terms that made the score E(q)·E(d): `(token, query_weight, passage_weight, product)`,
        largest product first."""
        q = self.encode_queries([query])[0]
        p = self.encode_passages([passage])[0]
        contribution = q * p
        top = min(top, int((contribution > 0).sum()))
        values, ids = contribution.topk(top)
        tokens = self._require_tokenizer().convert_ids_to_tokens(ids.tolist())
        return [(t, q[i].item(), p[i].item(), v.item()) for t, i, v in zip(tokens, ids.tolist(), values)]


AutoConfig.register("sidr", SIDRConfig)
AutoModel.register(SIDRConfig, SIDRModel)
