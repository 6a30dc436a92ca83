"""A SIDR retriever as a sentence-transformers `SparseEncoder` module.

[`SIDRModel.save_pretrained`] copies this file into every checkpoint folder as `sidr_sentence_transformers.py` and
names it in `modules.json`, so that

    SparseEncoder("path/or/hub-id", trust_remote_code=True)

loads the checkpoint with no r3hf installed: the module reads SIDR's own `config.json` and `model.safetensors` (one copy
of the weights on disk, shared by both libraries). It must stay self-contained (torch, transformers, safetensors and
sentence-transformers only): sentence-transformers imports it from the checkpoint folder, not from r3hf.

Per text, as SIDR: each token's last hidden state → LayerNorm → dot product with the encoder's word embeddings →
padding masked to −inf → max over tokens → ELU + 1 → special-token dimensions zeroed → the `max_active_dims` largest
kept (with `activate_lexical`, also every dimension of the text's own tokens). `encode_query` runs the query encoder,
`encode_document` the passage encoder (the same one when `shared_encoder`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules import InputModule
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

SIDE = "sidr_side"
QUERY_TASKS = ("query",)


def _build_encoder(config) -> nn.Module:
    model_class = AutoModel._model_mapping[type(config)]
    try:
        return model_class(config, add_pooling_layer=False)
    except TypeError:  # an encoder class without a pooler argument
        return model_class(config)


class SIDRSparseEncoderModule(InputModule):
    """SIDR's query and passage encoders as one sentence-transformers input module.

    Args:
        sidr_config: The checkpoint's `config.json` (a SIDR configuration as r3hf writes it).
        tokenizer: The checkpoint's tokenizer.
    """

    def __init__(self, sidr_config: dict[str, Any], tokenizer) -> None:
        super().__init__()
        self.sidr_config = sidr_config
        self.tokenizer = tokenizer
        encoder_config = AutoConfig.for_model(**sidr_config["encoder_config"])
        eps = sidr_config.get("layer_norm_eps", 1e-5)
        self.query_encoder = _build_encoder(encoder_config)
        self.query_norm = nn.LayerNorm(encoder_config.hidden_size, eps=eps)
        self.shared_encoder = bool(sidr_config.get("shared_encoder", False))
        if not self.shared_encoder:
            self.passage_encoder = _build_encoder(encoder_config)
            self.passage_norm = nn.LayerNorm(encoder_config.hidden_size, eps=eps)
        keep = torch.ones(encoder_config.vocab_size)
        if sidr_config.get("zeroed_token_ids"):
            keep[torch.tensor(sidr_config["zeroed_token_ids"], dtype=torch.long)] = 0
        self.register_buffer("vocab_keep_mask", keep, persistent=False)

    @property
    def max_active_dims(self) -> int:
        return int(self.sidr_config.get("max_active_dims") or self.sidr_config.get("topk") or 768)

    def preprocess(self, inputs: list[str], prompt: str | None = None, task: str | None = None, **kwargs) -> dict:
        """Tokenize for one side: the query side for `encode_query`, the passage side otherwise (as SIDR does)."""
        if prompt:
            inputs = [prompt + text for text in inputs]
        side = "query" if task in QUERY_TASKS else "passage"
        features = self.tokenizer(
            list(inputs),
            padding=True,
            truncation=True,
            max_length=self.sidr_config.get(f"{side}_max_length", 256),
            return_tensors="pt",
            return_token_type_ids=False,
        )
        return {"input_ids": features["input_ids"], "attention_mask": features["attention_mask"], SIDE: side}

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        side = features.get(SIDE, "passage")
        if side == "query" or self.shared_encoder:
            encoder, norm = self.query_encoder, self.query_norm
        else:
            encoder, norm = self.passage_encoder, self.passage_norm
        input_ids, attention_mask = features["input_ids"], features["attention_mask"]
        hidden = norm(encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        logits = hidden @ encoder.get_input_embeddings().weight.t()
        logits = logits.masked_fill(~attention_mask.bool().unsqueeze(-1), float("-inf"))
        embeds = (F.elu(logits.max(dim=1).values) + 1) * self.vocab_keep_mask
        if self.max_active_dims < embeds.shape[-1]:
            kept = torch.zeros_like(embeds, dtype=torch.bool)
            kept.scatter_(-1, embeds.topk(self.max_active_dims, dim=-1).indices, True)
            if self.sidr_config.get("activate_lexical"):
                bag = torch.zeros_like(embeds)
                bag.scatter_reduce_(1, input_ids, attention_mask.to(bag.dtype), reduce="amax")
                kept |= bag.bool()
            embeds = embeds * (kept & (self.vocab_keep_mask > 0))
        features["sentence_embedding"] = embeds
        return features

    def get_embedding_dimension(self) -> int:
        return int(self.vocab_keep_mask.shape[0])

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        """Write the checkpoint in r3hf's layout (SIDR's `config.json`, `model.safetensors`, the tokenizer), which both
        libraries load."""
        with open(os.path.join(output_path, "config.json"), "w", encoding="utf-8") as f:
            json.dump(self.sidr_config, f, indent=2)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(output_path, "model.safetensors"), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(output_path)

    @classmethod
    def load(
        cls,
        model_name_or_path: str,
        subfolder: str = "",
        token: bool | str | None = None,
        cache_folder: str | None = None,
        revision: str | None = None,
        local_files_only: bool = False,
        **kwargs,
    ) -> SIDRSparseEncoderModule:
        hub = {
            "token": token,
            "cache_folder": cache_folder,
            "revision": revision,
            "local_files_only": local_files_only,
        }
        config_path = cls.load_file_path(model_name_or_path, filename="config.json", subfolder=subfolder, **hub)
        weights_path = cls.load_file_path(model_name_or_path, filename="model.safetensors", subfolder=subfolder, **hub)
        if config_path is None or weights_path is None:
            raise ValueError(
                f"{model_name_or_path} lacks config.json or model.safetensors: it is not a SIDR checkpoint "
                "(load it with r3hf's SIDRModel.from_pretrained and save it again with save_pretrained)."
            )
        with open(config_path, encoding="utf-8") as f:
            sidr_config = json.load(f)
        tokenizer = AutoTokenizer.from_pretrained(
            model_name_or_path,
            subfolder=subfolder,
            token=token,
            cache_dir=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        module = cls(sidr_config, tokenizer)
        state = {k: v for k, v in load_file(weights_path).items() if not k.endswith("position_ids")}
        missing, unexpected = module.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(
                f"The weights of {model_name_or_path} do not match its SIDR config (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}): re-save the retriever with r3hf's save_pretrained."
            )
        return module
