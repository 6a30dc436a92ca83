"""The sentence-transformers files of a SIDR checkpoint folder, written without importing sentence-transformers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils import atomic_write_text
from ..version import __version__

#: The file sentence-transformers imports from the folder (`trust_remote_code=True`): a copy of
#: `r3hf/integrations/sentence_transformers.py`, named so it cannot shadow the sentence_transformers package.
MODULE_FILE = "sidr_sentence_transformers.py"
MODULE_CLASS = "SIDRSparseEncoderModule"
SPARSE_ENCODER_FILES = (MODULE_FILE, "modules.json", "config_sentence_transformers.json")


def sparse_encoder_config(max_active_dims: int, activate_lexical: bool) -> dict:
    """`config_sentence_transformers.json`: a `SparseEncoder` scoring by dot product, no prompts. With
    `activate_lexical`, a text keeps its own tokens besides the top `max_active_dims` dimensions, so the module applies
    that cut itself and sentence-transformers is given none."""
    config = {
        "model_type": "SparseEncoder",
        "__version__": {"r3hf": __version__},
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "dot",
    }
    if not activate_lexical:
        config["max_active_dims"] = max_active_dims
    return config


def write_sparse_encoder_files(folder: str | os.PathLike, max_active_dims: int, activate_lexical: bool) -> None:
    """Make a SIDR checkpoint folder loadable by `SparseEncoder(folder, trust_remote_code=True)`: the module file,
    `modules.json` naming it, and `config_sentence_transformers.json`. The module reads the folder's own `config.json`
    and `model.safetensors`, so no weight is written twice."""
    folder = Path(folder)
    source = Path(__file__).with_name("sentence_transformers.py").read_text(encoding="utf-8")
    atomic_write_text(folder / MODULE_FILE, source)
    modules = [{"idx": 0, "name": "0", "path": "", "type": f"{Path(MODULE_FILE).stem}.{MODULE_CLASS}"}]
    atomic_write_text(folder / "modules.json", json.dumps(modules, indent=2) + "\n")
    config = sparse_encoder_config(max_active_dims, activate_lexical)
    atomic_write_text(folder / "config_sentence_transformers.json", json.dumps(config, indent=2) + "\n")
