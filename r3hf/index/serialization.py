"""The saved format of an index: file names, the memory-mapped safetensors reader, shard loading, and the check of
each file against its recorded size and checksum (hashed once per content, by `r3hf.file_cache`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from ..file_cache import cached_sha256
from .shard import IndexShard

INDEX_CONFIG = "index_config.json"
ARRAYS_FILE = "index.safetensors"
CORPUS_FILE = "corpus.parquet"
FORMAT_VERSION = 2
DEFAULT_MAX_SHARD_SIZE = "500MB"
_SAFETENSORS_DTYPES = {
    "U8": np.uint8,
    "U16": np.uint16,
    "I32": np.int32,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
}
_DATA_FILE = re.compile(r"(index|corpus)(-\d{5}-of-\d{5})?\.(safetensors|parquet)")


def _read_safetensors(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, memory-mapped (read-only) from the file when `mmap`."""
    if not mmap:
        return load_file(path)
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
    arrays = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_SAFETENSORS_DTYPES[meta["dtype"]])
        start, stop = meta["data_offsets"]
        count = (stop - start) // dtype.itemsize
        # A plain ndarray over the mapping: the np.memmap subclass makes every slice cost a Python-level hook,
        # which doubles the time to gather a query's posting lists.
        arrays[name] = (
            np.memmap(path, dtype=dtype, mode="r", offset=8 + header_size + start, shape=(count,)).view(np.ndarray)
            if count
            else np.zeros(0, dtype=dtype)
        )
    return arrays


def _load_shard(file: Path, entry: dict, vocab_size: int, mmap: bool) -> IndexShard:
    arrays = _read_safetensors(file, mmap)
    if "indptr" not in arrays or "indices" not in arrays:
        raise ValueError(f"{file} holds no index arrays: re-download or rebuild the index.")
    if len(arrays["indptr"]) - 1 != entry["num_passages"]:
        raise ValueError(
            f"{file} holds {len(arrays['indptr']) - 1} passages, {INDEX_CONFIG} says {entry['num_passages']}: the "
            "shard comes from another build; re-download or rebuild the index."
        )
    if "term_indptr" not in arrays:  # format 1: row-major only
        return IndexShard.from_csr(
            arrays["indptr"], arrays["indices"], arrays.get("values"), vocab_size, entry["start"]
        )
    return IndexShard(
        start=entry["start"],
        indptr=arrays["indptr"],
        indices=arrays["indices"],
        values=arrays.get("values"),
        term_indptr=arrays["term_indptr"],
        term_rows=arrays["term_rows"],
        term_values=arrays.get("term_values"),
    )


def verify_files(folder: Path, files: dict, record: str, fix: str, verify: bool = True) -> None:
    """Refuse a missing file, or one whose size or (with `verify`) SHA-256 differs from what `record` (the JSON file
    in `folder` that lists them) says; the message names the file and ends with `fix`."""
    for name, meta in files.items():
        file = folder / name
        if not file.exists() or file.stat().st_size != meta["size"]:
            raise ValueError(f"{file} is missing or truncated (expected {meta['size']} bytes): {fix}.")
        if verify and cached_sha256(file) != meta["sha256"]:
            raise ValueError(
                f"{file} does not match its checksum in {record}: the file is corrupted or comes from another build; "
                f"{fix}."
            )
