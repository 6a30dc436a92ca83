"""`load_index`: a saved index loaded as the class its config names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .bag_of_tokens import BagOfTokensIndex
from .csr_index import CSRIndex
from .serialization import INDEX_CONFIG
from .sparse_embedding import SparseEmbeddingIndex


def load_index(
    path_or_repo_id: str | os.PathLike, revision: str | None = None, token: str | None = None, **kwargs
) -> CSRIndex:
    """Load a saved index (a folder or a Hub dataset repo) as the class its `index_config.json` names:
    [`BagOfTokensIndex`] or [`SparseEmbeddingIndex`]. `kwargs` go to that class's `from_pretrained`."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        config_path = path / INDEX_CONFIG
    else:
        from huggingface_hub import hf_hub_download

        config_path = Path(
            hf_hub_download(str(path_or_repo_id), INDEX_CONFIG, repo_type="dataset", revision=revision, token=token)
        )
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: is {path_or_repo_id} an r3hf index?")
    kind = json.loads(config_path.read_text()).get("index_type")
    classes = {cls.kind: cls for cls in (BagOfTokensIndex, SparseEmbeddingIndex)}
    if kind not in classes:
        raise ValueError(f"{config_path} names index_type {kind!r}; this r3hf reads {sorted(classes)}: upgrade r3hf.")
    return classes[kind].from_pretrained(path_or_repo_id, revision=revision, token=token, **kwargs)
