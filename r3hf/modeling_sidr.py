"""SIDR: the semi-parametric retriever that R3 trains (a SiDR / VDR bi-encoder in vocabulary space)."""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput, cached_file, logging

from .configuration_sidr import SIDRConfig
from .hub import push_folder
from .integrations.sparse_encoder_files import write_sparse_encoder_files
from .model_card import SIDRModelCardData, public_model_id
from .retrieval import retrieve
from .utils import Passage, check_texts, iter_batches, special_token_ids, zeroed_token_ids

logger = logging.get_logger(__name__)

QUERY, PASSAGE = "query", "passage"
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")


def elu1p(x: torch.Tensor) -> torch.Tensor:
    """`ELU(x) + 1`: a smooth, strictly positive activation used instead of a softmax over the vocabulary."""
    return F.elu(x) + 1


def topk_mask(embeds: torch.Tensor, k: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask of the `k` largest values of each row (and, when given, every dimension where `keep` is true)."""
    if k >= embeds.shape[-1]:
        return torch.ones_like(embeds, dtype=torch.bool)
    mask = torch.zeros_like(embeds, dtype=torch.bool)
    mask.scatter_(-1, embeds.topk(k, dim=-1).indices, True)
    if keep is not None:
        mask |= keep.bool()
    return mask


def topk_sparsify(embeds: torch.Tensor, k: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the `k` largest values of each row (and, when given, every dimension where `keep` is true).

    Gradients flow to the kept values only.
    """
    return embeds if k >= embeds.shape[-1] else embeds * topk_mask(embeds, k, keep)


# ---------------------------------------------------------------- the original SiDR checkpoint layout
# jzhoubu/sidr-*, vsearch/svdr-*: `encoder_q` / `encoder_p` config sections and `encoder_{q,p}.bert_model.*` weights,
# read in memory by `SIDRModel.from_pretrained`. The original code drops the first `shift_vocab_num` vocabulary ids
# from its output; r3hf keeps the full vocabulary and zeroes those dimensions instead, so every dot product is the
# same.

# Buffers and heads the original checkpoints may carry that SIDR does not use.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_SIDES = {"encoder_q": ("query_encoder", "query_norm"), "encoder_p": ("passage_encoder", "passage_norm")}


def _is_original_sidr_config(config: dict) -> bool:
    """Whether a `config.json` is in the original SiDR layout (`encoder_q` / `encoder_p` sections)."""
    return isinstance(config.get("encoder_q"), dict) and "model_type" not in config


def _original_side_config(config: dict, side: str) -> dict:
    side_cfg = config.get(side)
    if not isinstance(side_cfg, dict):
        raise ValueError(f"config.json has no '{side}' section: is this a checkpoint in the original SiDR layout?")
    missing = [k for k in ("shift_vocab_num", "topk", "max_len") if k not in side_cfg]
    if missing:
        raise ValueError(f"config.json['{side}'] lacks {missing}.")
    if side_cfg.get("pooling", "max") != "max":
        raise ValueError(f"Only max pooling is supported; config.json['{side}'] has pooling={side_cfg['pooling']!r}.")
    return side_cfg


def _original_encoder_id(config: dict) -> str | None:
    """The Hub id or path the original code builds its encoders from (`encoder_q.model_id`)."""
    return config["encoder_q"].get("model_id")


def _original_sidr_settings(config: dict, weights: dict[str, torch.Tensor]) -> dict:
    """[`SIDRConfig`] fields (all but `encoder_config`) of an original checkpoint."""
    q_cfg = _original_side_config(config, "encoder_q")
    shared = bool(config.get("shared_encoder", False)) or not any(k.startswith("encoder_p.") for k in weights)
    p_cfg = q_cfg if shared else _original_side_config(config, "encoder_p")
    if q_cfg["topk"] != p_cfg["topk"] or q_cfg["shift_vocab_num"] != p_cfg["shift_vocab_num"]:
        raise ValueError("Query and passage encoders with different topk or shift_vocab_num are not supported.")
    return {
        "shared_encoder": shared,
        "max_active_dims": int(q_cfg["topk"]),
        "query_max_length": int(q_cfg["max_len"]),
        "passage_max_length": int(p_cfg["max_len"]),
        "zeroed_token_ids": list(range(int(q_cfg["shift_vocab_num"]))),
    }


def _original_state_dict(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], shared: bool
) -> dict[str, torch.Tensor]:
    """Rename original weights (`encoder_{q,p}.bert_model.*`, `encoder_{q,p}.ln.*`) to a [`SIDRModel`]'s, checking
    that every expected weight is there with the expected shape.

    Args:
        weights: The original state dict.
        expected: The target model's state dict (names and shapes).
        shared: Whether the checkpoint has one encoder for both sides.
    """
    state = {}
    for key, tensor in weights.items():
        prefix, _, rest = key.partition(".")
        if prefix not in _SIDES or rest.endswith(_IGNORED_SUFFIXES) or (shared and prefix == "encoder_p"):
            continue
        encoder_name, norm_name = _SIDES[prefix]
        if rest.startswith("bert_model."):
            target = f"{encoder_name}.{rest[len('bert_model.') :]}"
        elif rest.startswith("ln."):
            target = f"{norm_name}.{rest[len('ln.') :]}"
        else:
            continue
        if target not in expected:
            raise ValueError(f"Unexpected weight {key!r} (mapped to {target!r}): the encoder_config does not match.")
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise ValueError(
                f"Weight {key!r} has shape {tuple(tensor.shape)} but the encoder_config expects "
                f"{tuple(expected[target].shape)}: pass the matching encoder_config."
            )
        state[target] = tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"The checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}.")
    return state


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


# Checkpoint parts SIDR does not use: a pooler (sentence-transformers' BERTs keep one) and BERT's MLM head.
UNUSED_CHECKPOINT_KEYS = (r"^pooler\.", r"^cls\.")


def _load_encoder(path: str | os.PathLike, config: PreTrainedConfig) -> PreTrainedModel:
    """An encoder's pretrained weights, without its pooler. The checkpoint's unused parts are expected, so they are
    not reported as unexpected; a checkpoint that lacks an encoder weight is refused rather than filled at random."""
    model_class = AutoModel._model_mapping[type(config)]
    ignored = [*(model_class._keys_to_ignore_on_load_unexpected or []), *UNUSED_CHECKPOINT_KEYS]
    # a subclass carries the ignore list for this load alone; the class transformers registers is left as it is
    loader = type(model_class.__name__, (model_class,), {"_keys_to_ignore_on_load_unexpected": ignored})
    encoder, info = loader.from_pretrained(path, output_loading_info=True, **_encoder_kwargs(config))
    if info["missing_keys"]:
        raise ValueError(
            f"{path} lacks encoder weights {sorted(info['missing_keys'])[:5]}: start from a complete checkpoint of a "
            "BERT-style encoder (a BertModel or BertForMaskedLM folder, or its Hub id)."
        )
    return encoder


class SIDRModel(PreTrainedModel):
    """A SiDR retriever: texts → non-negative, top-k sparse vectors over the tokenizer's vocabulary.

    Each token's last hidden state goes through a LayerNorm and is projected on the encoder's word-embedding matrix;
    `elu1p` makes the logits positive; a max over the non-padding tokens gives one `|V|` vector, whose special-token
    dimensions are zeroed and which keeps its `max_active_dims` largest values. A text's bag of tokens `T(x)` is the
    binary vector of the (non-special) tokens it contains.

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
        self.model_card_data = SIDRModelCardData()
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
        max_active_dims: int = 768,
        tokenizer=None,
        **kwargs,
    ) -> SIDRModel:
        """Initialise both encoders from any BERT-style encoder (with or without an MLM head) on the Hub or on disk.

        Args:
            pretrained_model_name_or_path: Hub id or local folder of the encoder.
            shared_encoder: Use a single encoder for queries and passages.
            max_active_dims: Dimensions kept per embedding.
            tokenizer: A tokenizer or its path; defaults to the encoder's own.
            **kwargs: Further [`SIDRConfig`] fields (`query_max_length`, `activate_lexical`, ...).
        """
        if tokenizer is None or isinstance(tokenizer, str | os.PathLike):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained_model_name_or_path)
        encoder_config = AutoConfig.from_pretrained(pretrained_model_name_or_path)
        encoder = _load_encoder(pretrained_model_name_or_path, encoder_config)
        if len(tokenizer) > encoder_config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the encoder's vocabulary has "
                f"{encoder_config.vocab_size}: use the encoder's own tokenizer."
            )
        kwargs = {"zeroed_token_ids": zeroed_token_ids(tokenizer), **special_token_ids(tokenizer), **kwargs}
        config = SIDRConfig(
            encoder_config=encoder_config.to_dict(),
            shared_encoder=shared_encoder,
            max_active_dims=max_active_dims,
            **kwargs,
        )
        model = cls(config, tokenizer=tokenizer)
        state = encoder.state_dict()
        for target in filter(None, (model.query_encoder, model.passage_encoder)):
            missing, _ = target.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"{pretrained_model_name_or_path} lacks encoder weights {missing[:5]}.")
        model.config.name_or_path = str(pretrained_model_name_or_path)
        model.model_card_data.base_model = public_model_id(pretrained_model_name_or_path)
        return model

    def save_pretrained(self, save_directory: str | os.PathLike, *args, create_model_card: bool = True, **kwargs):
        """Save weights (safetensors), config, the tokenizer and a model card (`README.md`) to `save_directory`.

        The folder is also a sentence-transformers `SparseEncoder` (`SparseEncoder(path, trust_remote_code=True)`):
        `modules.json`, `config_sentence_transformers.json` and the module file that reads these same weights.

        The card is rendered from `model.model_card_data` (filled by [`R3Trainer`]: base retriever, reward LLM,
        training data, evaluation results, hyperparameters); `push_to_hub` uploads it too.
        """
        kwargs["safe_serialization"] = True
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", True):
            return
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)
        write_sparse_encoder_files(save_directory, self.config.max_active_dims, self.config.activate_lexical)
        if create_model_card:
            self.create_model_card().save(os.path.join(save_directory, "README.md"))

    def create_model_card(self, **overrides):
        """The retriever's model card (a `huggingface_hub.ModelCard`) from `model_cards/retriever_card.md`, rendered
        from `model_card_data` with any of its fields replaced by `overrides`."""
        return self.model_card_data.to_card(self.config, **overrides)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
    ) -> str:
        """Upload weights, config, tokenizer and the model card to a Hub model repo (created if needed); returns the
        commit URL. Unlike `PreTrainedModel.push_to_hub`, the card is the retriever's own, not a blank template."""

        def save(folder: str, repo_id: str) -> None:
            self.save_pretrained(folder, max_shard_size=max_shard_size, create_model_card=False)
            extra_tags = {"tags": [*self.model_card_data.tags, *tags]} if tags else {}
            self.create_model_card(repo_id=repo_id, **extra_tags).save(os.path.join(folder, "README.md"))

        return push_folder(
            save,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or "Upload SIDR retriever",
            commit_description=commit_description,
        )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *args,
        tokenizer=None,
        encoder_config: str | os.PathLike | dict | PreTrainedConfig | None = None,
        activate_lexical: bool = True,
        **kwargs,
    ) -> SIDRModel:
        """Load a retriever and its tokenizer from a local folder or a Hub repo (safetensors weights only).

        A checkpoint in the original SiDR layout (`config.json` with `encoder_q` / `encoder_p` sections, as
        `jzhoubu/sidr-*`) is converted in memory, scoring exactly as the original code does. A checkpoint whose weights
        do not match its config is refused rather than completed with random weights.

        Args:
            pretrained_model_name_or_path: Local folder or Hub repo id.
            tokenizer: A tokenizer or its path / Hub id; defaults to the one saved with the checkpoint (for the
                original layout, else the one of its `model_id`).
            encoder_config: Original layout only: the BERT configuration (path, Hub id, dict or config) of the
                encoders; defaults to the checkpoint's own `encoder_q.model_id`, as the original code builds them.
            activate_lexical: Original layout only: keep the dimensions of the text's own tokens besides the top-k,
                as the original `embed()` does by default.
            **kwargs: As for `PreTrainedModel.from_pretrained` (`revision`, `token`, `cache_dir`, ...).
        """
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        config_file = cached_file(pretrained_model_name_or_path, "config.json", **hub_kwargs)
        raw_config = json.loads(Path(config_file).read_text())
        if _is_original_sidr_config(raw_config):
            logger.warning(
                f"{pretrained_model_name_or_path} is in the original SiDR layout: converting it in memory "
                "(save_pretrained writes it in the r3hf layout)."
            )
            return cls._from_original(
                pretrained_model_name_or_path, raw_config, tokenizer, encoder_config, activate_lexical, hub_kwargs
            )
        if _called_by_sentence_transformers():
            # sentence-transformers reaches here only for a folder without modules.json, which it would otherwise
            # fill with a generic pooling head that cannot encode text.
            raise ValueError(
                f"{pretrained_model_name_or_path} was saved before r3hf wrote sentence-transformers files (it has no "
                "modules.json), so sentence-transformers cannot load it as a SparseEncoder. Load it with "
                f"SIDRModel.from_pretrained({str(pretrained_model_name_or_path)!r}) and save it again with "
                "save_pretrained (or push_to_hub), which writes them."
            )
        want_info = kwargs.pop("output_loading_info", False)
        kwargs["use_safetensors"] = True
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = {k: sorted(map(str, info[k]))[:5] for k in ("missing_keys", "mismatched_keys") if info.get(k)}
        unexpected = [k for k in info.get("unexpected_keys", ()) if not k.endswith("position_ids")]
        if unexpected:
            problems["unexpected_keys"] = sorted(unexpected)[:5]
        if problems:
            raise ValueError(
                f"The weights of {pretrained_model_name_or_path} do not match its SIDR config ({problems}): the "
                "checkpoint is incomplete or from another architecture. Re-download it, or re-save the model with "
                "`save_pretrained`."
            )
        model.tokenizer = _load_tokenizer(tokenizer or pretrained_model_name_or_path, hub_kwargs)
        model.model_card_data.base_model = public_model_id(pretrained_model_name_or_path)
        return (model, info) if want_info else model

    @classmethod
    def _from_original(cls, path, raw_config: dict, tokenizer, encoder_config, activate_lexical: bool, hub_kwargs):
        weights_file = cached_file(
            path, "model.safetensors", **hub_kwargs, _raise_exceptions_for_missing_entries=False
        )
        if weights_file is None:
            raise ValueError(
                f"{path} holds no model.safetensors: r3hf loads weights from safetensors only. If it holds a "
                "pytorch_model.bin that you trust, convert it once with `r3hf convert-sidr SRC OUT --allow-pickle`."
            )
        weights = load_file(weights_file)
        settings = _original_sidr_settings(raw_config, weights)
        model_id = _original_encoder_id(raw_config)
        encoder_config = _encoder_config(encoder_config or model_id, path, hub_kwargs)
        if tokenizer is None:
            tokenizer = _first_tokenizer([path, model_id], hub_kwargs)
        tokenizer = _load_tokenizer(tokenizer, hub_kwargs)
        config = SIDRConfig(
            encoder_config=encoder_config.to_dict(),
            activate_lexical=activate_lexical,
            **special_token_ids(tokenizer),
            **settings,
        )
        model = cls(config, tokenizer=tokenizer)
        model.load_state_dict(_original_state_dict(weights, model.state_dict(), settings["shared_encoder"]))
        model.config.name_or_path = str(path)
        model.model_card_data.base_model = public_model_id(path)
        return model.eval()

    # ------------------------------------------------------------------ core math

    def _encoder(self, side: str) -> tuple[PreTrainedModel, nn.LayerNorm]:
        if side == QUERY or self.config.shared_encoder:
            return self.query_encoder, self.query_norm
        return self.passage_encoder, self.passage_norm

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, side: str = QUERY) -> torch.Tensor:
        """E(x): top-k sparsified vocabulary embeddings `[batch, V]` of tokenized texts, with gradients."""
        encoder, norm = self._encoder(side)
        hidden = norm(encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        vocab = encoder.get_input_embeddings().weight
        # elu1p is monotonic, so max-pooling the logits and then applying it equals the original max of elu1p.
        # The [batch, length, V] logits, by far the largest tensor, are built without gradients: only the kept top-k
        # dimensions can carry one, and each is recomputed below from the token that won its max. This skips the
        # dense backward through that tensor and gives the same gradients (benchmarks/bench_embed_backward.py).
        with torch.no_grad():
            logits = hidden @ vocab.t()
            logits.masked_fill_(~attention_mask.bool().unsqueeze(-1), float("-inf"))
            pooled, winners = logits.max(dim=1)
            del logits
            embeds = elu1p(pooled) * self.vocab_keep_mask
            keep = self._bag_of_tokens_ids(input_ids, attention_mask) if self.config.activate_lexical else None
            kept = topk_mask(embeds, self.config.max_active_dims, keep) & (self.vocab_keep_mask > 0)
        if not (torch.is_grad_enabled() and (hidden.requires_grad or vocab.requires_grad)):
            return embeds * kept
        rows, dims = kept.nonzero(as_tuple=True)
        values = elu1p((hidden[rows, winners[rows, dims]] * vocab[dims]).sum(-1)) * self.vocab_keep_mask[dims]
        return torch.zeros_like(embeds).index_put((rows, dims), values)

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

    def tokenize(self, texts: Sequence[Passage] | str, side: str = QUERY) -> dict[str, torch.Tensor]:
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

    @torch.no_grad()
    def _encode(
        self,
        texts,
        side: str,
        batch_size: int,
        show_progress_bar: bool | None,
        convert_to_sparse_tensor: bool,
        save_to_cpu: bool,
        max_active_dims: int | None,
    ) -> torch.Tensor:
        texts = check_texts(texts, allow_dicts=side == PASSAGE)
        if max_active_dims is not None and max_active_dims < 1:
            raise ValueError(f"max_active_dims must be at least 1, got {max_active_dims}.")
        # Longest first, so each batch pads to texts of similar length; the result is put back in input order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        was_training = self.training
        self.eval()
        out = []
        try:
            desc = "Encoding queries" if side == QUERY else "Encoding passages"
            for batch in iter_batches([texts[i] for i in order], batch_size, show_progress_bar, desc):
                embeds = self.embed(**self.tokenize(batch, side), side=side).float()
                if max_active_dims is not None:
                    embeds = topk_sparsify(embeds, max_active_dims)
                if convert_to_sparse_tensor:
                    embeds = embeds.to_sparse()
                out.append(embeds.cpu() if save_to_cpu else embeds)
        finally:
            self.train(was_training)
        inverse = torch.argsort(torch.tensor(order, device=out[0].device))
        embeds = torch.cat(out).index_select(0, inverse)
        return embeds.coalesce() if convert_to_sparse_tensor else embeds

    def encode_query(
        self,
        sentences: Sequence[str] | str,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_sparse_tensor: bool = True,
        save_to_cpu: bool = False,
        max_active_dims: int | None = None,
    ) -> torch.Tensor:
        """E(q) of queries, as sentence-transformers' `SparseEncoder.encode_query`: a `[n, V]` tensor, non-negative,
        at most `config.max_active_dims` active dimensions per row.

        Args:
            sentences: Query strings (or one).
            batch_size: Queries encoded at a time.
            show_progress_bar: Show a progress bar (default: for more than 4 batches).
            convert_to_sparse_tensor: Return a sparse COO tensor (default) rather than a dense one.
            save_to_cpu: Move each batch's embeddings to the CPU as they are computed.
            max_active_dims: Keep only the largest `max_active_dims` values of each row (below the model's own
                `config.max_active_dims`).
        """
        return self._encode(
            sentences, QUERY, batch_size, show_progress_bar, convert_to_sparse_tensor, save_to_cpu, max_active_dims
        )

    def encode_document(
        self,
        sentences: Sequence[Passage] | Passage,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_sparse_tensor: bool = True,
        save_to_cpu: bool = False,
        max_active_dims: int | None = None,
    ) -> torch.Tensor:
        """E(d) of passages (strings, or `{"title","text"}` dicts joined as `"title [SEP] text"`) with the passage
        encoder; arguments as for [`~SIDRModel.encode_query`]."""
        return self._encode(
            sentences, PASSAGE, batch_size, show_progress_bar, convert_to_sparse_tensor, save_to_cpu, max_active_dims
        )

    #: Alias of [`~SIDRModel.encode_query`] (the same function).
    encode_queries = encode_query
    #: Alias of [`~SIDRModel.encode_document`] (the same function).
    encode_passages = encode_document

    def decode(self, embeddings: torch.Tensor, top_k: int | None = None) -> list:
        """The active vocabulary dimensions of embeddings as `(token, weight)` pairs, largest weight first.

        Args:
            embeddings: One `[V]` embedding or a `[n, V]` batch, dense or sparse.
            top_k: Keep only the `top_k` largest per embedding.

        Returns:
            A list of `(token, weight)` pairs for one embedding, or one such list per row of a batch.
        """
        dense = embeddings.to_dense() if embeddings.is_sparse else embeddings
        if dense.dim() not in (1, 2) or dense.shape[-1] != self.config.vocab_size:
            raise ValueError(
                f"Expected a [V] or [n, V] embedding with V={self.config.vocab_size}, got {tuple(dense.shape)}."
            )
        tokenizer = self._require_tokenizer()
        decoded = []
        for row in dense.reshape(-1, dense.shape[-1]).detach().float().cpu():
            active = int((row != 0).sum())
            values, ids = row.topk(min(active, top_k) if top_k is not None else active)
            decoded.append(list(zip(tokenizer.convert_ids_to_tokens(ids.tolist()), values.tolist())))
        return decoded[0] if dense.dim() == 1 else decoded

    def similarity(self, embeddings_a: torch.Tensor, embeddings_b: torch.Tensor) -> torch.Tensor:
        """Dot products of every row of `embeddings_a` `[n, V]` with every row of `embeddings_b` `[m, V]` (dense or
        sparse): a dense `[n, m]` tensor, the score SIDR retrieves by."""
        a = embeddings_a.unsqueeze(0) if embeddings_a.dim() == 1 else embeddings_a
        b = embeddings_b.unsqueeze(0) if embeddings_b.dim() == 1 else embeddings_b
        b = b.to_dense() if b.is_sparse else b
        scores = a @ b.T
        return scores.to_dense() if scores.is_sparse else scores

    @staticmethod
    def sparsity(embeddings: torch.Tensor) -> dict[str, float]:
        """`{"active_dims": mean non-zero dimensions per row, "sparsity_ratio": share of zero dimensions}`."""
        rows = embeddings.shape[0] if embeddings.dim() == 2 else 1
        values = embeddings.coalesce().values() if embeddings.is_sparse else embeddings
        active = int((values != 0).sum()) / rows
        return {"active_dims": active, "sparsity_ratio": 1.0 - active / embeddings.shape[-1]}

    def bag_of_tokens(self, texts: Sequence[Passage] | Passage, side: str = PASSAGE) -> torch.Tensor:
        """T(x): binary `[n, V]` vectors of the tokens each text contains (truncated as that side is), no model needed."""
        enc = self.tokenize(texts, side)
        return self._bag_of_tokens_ids(enc["input_ids"], enc["attention_mask"])

    def retrieve(
        self,
        queries: Sequence[str] | str,
        index,
        k: int = 10,
        rerank_top_m: int = 100,
        batch_size: int = 32,
        first_stage: str = "bag_of_tokens",
        fusion: str = "none",
        fusion_weight: float = 0.5,
        query_cut: int | None = None,
    ):
        """Retrieve the top-`k` corpus passages of each query; late-parametric on a `BagOfTokensIndex` (top
        `rerank_top_m` candidates of the `first_stage`, by default E(q)·T(d), re-ranked by fresh E(q)·E(d), optionally
        fused with bm25s's ranking), plain search on a `SparseEmbeddingIndex`. Returns `SearchResults(rows, scores)`;
        see [`r3hf.retrieval.retrieve`]."""
        return retrieve(
            self,
            queries,
            index,
            k=k,
            rerank_top_m=rerank_top_m,
            batch_size=batch_size,
            first_stage=first_stage,
            fusion=fusion,
            fusion_weight=fusion_weight,
            query_cut=query_cut,
        )

    def explain(self, query: str, passage: Passage, top: int = 20) -> list[tuple[str, float, float, float]]:
        """The vocabulary terms that made the score E(q)·E(d): `(token, query_weight, passage_weight, product)`,
        largest product first (the [`~SIDRModel.decode`] of the element-wise product)."""
        q = self.encode_query([query], convert_to_sparse_tensor=False)[0]
        p = self.encode_document([passage], convert_to_sparse_tensor=False)[0]
        tokenizer = self._require_tokenizer()
        terms = self.decode(q * p, top_k=top)
        ids = tokenizer.convert_tokens_to_ids([token for token, _ in terms])
        return [(token, q[i].item(), p[i].item(), product) for (token, product), i in zip(terms, ids)]


def _called_by_sentence_transformers() -> bool:
    """Whether sentence-transformers' module loading is on the call stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("sentence_transformers."):
            return True
        frame = frame.f_back
    return False


def _load_tokenizer(tokenizer, hub_kwargs: dict):
    if tokenizer is None or not isinstance(tokenizer, str | os.PathLike):
        return tokenizer
    return AutoTokenizer.from_pretrained(tokenizer, **hub_kwargs)


def _first_tokenizer(candidates: list, hub_kwargs: dict):
    """The first of `candidates` (paths or Hub ids) that holds a tokenizer."""
    for candidate in filter(None, candidates):
        try:
            return AutoTokenizer.from_pretrained(candidate, **hub_kwargs)
        except (OSError, ValueError, KeyError):
            continue
    raise ValueError(
        f"Neither {candidates[0]} nor its encoder {candidates[1:]} holds a tokenizer that loads here: pass "
        "tokenizer='google-bert/bert-base-uncased' (or a local path)."
    )


def _encoder_config(encoder_config, checkpoint, hub_kwargs: dict) -> PreTrainedConfig:
    if isinstance(encoder_config, PreTrainedConfig):
        return encoder_config
    if isinstance(encoder_config, dict):
        return AutoConfig.for_model(**encoder_config)
    if encoder_config is None:
        raise ValueError(f"{checkpoint} names no encoder (encoder_q.model_id): pass encoder_config=.")
    try:
        return AutoConfig.from_pretrained(encoder_config, **hub_kwargs)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Could not load the encoder configuration {str(encoder_config)!r} of {checkpoint} ({error}): pass "
            "encoder_config= with a local config.json path or a reachable Hub id."
        ) from error


AutoConfig.register("sidr", SIDRConfig)
AutoModel.register(SIDRConfig, SIDRModel)
