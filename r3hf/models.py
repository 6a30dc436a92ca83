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


def load_retriever(name_or_path: str, **kwargs) -> SIDRModel:
    """A [`SIDRModel`] from an r3hf (or original SiDR) checkpoint, or a new one initialised from a BERT-style encoder
    (an offline asset name, a path or a Hub id); `kwargs` are [`SIDRConfig`] fields for a new one."""
    path = resolve_model_path(name_or_path)
    config = json.loads(Path(cached_file(path, "config.json")).read_text())
    if config.get("model_type") not in (None, "sidr"):  # None: the original SiDR layout
        return SIDRModel.from_encoder(path, **kwargs)
    return SIDRModel.from_pretrained(path)
