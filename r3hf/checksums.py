"""SHA-256 checksums of saved files, computed once per file content: remembered under r3hf's cache folder, keyed by
the file's real path, size and modification time, so that loading a large index again does not re-hash it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .assets import cache_dir
from .utils import atomic_write_text, sha256_file

logger = logging.getLogger(__name__)


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
