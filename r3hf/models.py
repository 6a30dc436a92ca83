"""Loading models by name: the offline weight packages' names, local folders and Hub ids."""

from __future__ import annotations

import json
from pathlib import Path

from transformers.utils import cached_file

from .assets import OFFLINE_ASSETS, offline_model_path
from .modeling_sidr import SIDRModel


def resolve_model_path(name: str) -> str:
    """An offline asset name (`all-minilm-l6-v2`, `splade-tiny`, `smollm2-135m-instruct`) becomes its local folder;
    anything else (a path or a Hub id) is returned as is."""
    return offline_model_path(name) if name in OFFLINE_ASSETS else name


def is_sidr_checkpoint(name_or_path: str) -> bool:
    """Whether a name, path or Hub id holds a saved retriever (r3hf's or the original SiDR layout), not an encoder."""
    config = json.loads(Path(cached_file(resolve_model_path(name_or_path), "config.json")).read_text())
    return config.get("model_type") in (None, "sidr")  # None: the original SiDR layout


def load_retriever(name_or_path: str, **kwargs) -> SIDRModel:
    """A [`SIDRModel`] from an r3hf (or original SiDR) checkpoint, or a new one initialised from a BERT-style encoder
    (an offline asset name, a path or a Hub id); `kwargs` are [`SIDRConfig`] fields for a new one. A saved retriever
    keeps the settings it was trained with, so `kwargs` for one are refused rather than dropped."""
    path = resolve_model_path(name_or_path)
    if not is_sidr_checkpoint(path):
        return SIDRModel.from_encoder(path, **kwargs)
    if kwargs:
        raise ValueError(
            f"{name_or_path} is a saved retriever, which keeps its own settings: load_retriever cannot apply "
            f"{sorted(kwargs)} to it. Change them on the loaded model's config (model.config.query_max_length = ...) "
            "if you mean to."
        )
    return SIDRModel.from_pretrained(path)
