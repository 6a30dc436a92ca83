"""The r3hf cache folder, and the checksums of large files remembered in it so that each is hashed once per content.
Imports nothing from r3hf but its leaf helpers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from transformers.utils import logging

from .utils import atomic_write_text, sha256_file

logger = logging.get_logger(__name__)


def cache_dir() -> Path:
    """Where converted assets and verified checksums are kept: `$R3HF_CACHE`, else `$HF_HOME/r3hf`, else
    `~/.cache/r3hf`."""
    if os.environ.get("R3HF_CACHE"):
        return Path(os.environ["R3HF_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "r3hf"
    return Path.home() / ".cache" / "r3hf"


def _record(path: Path) -> Path:
    key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()
    return cache_dir() / "verified" / f"{key}.json"


def remember_checksum(path: Path, sha256: str) -> None:
    """Record a file's checksum (known from writing it) with its size and modification time."""
    stat = path.stat()
    try:
        atomic_write_text(
            _record(path), json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256})
        )
    except OSError as error:  # a read-only cache only costs re-hashing next time
        logger.debug("Could not record the checksum of %s: %s", path, error)


def cached_sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per content: remembered with the file's size and modification time."""
    stat = path.stat()
    try:
        saved = json.loads(_record(path).read_text())
        if saved["size"] == stat.st_size and saved["mtime_ns"] == stat.st_mtime_ns:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    remember_checksum(path, digest)
    return digest
