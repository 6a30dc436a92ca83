"""Leaf helpers shared by the model, the indexes, the rewards and the trainer: passage text, input checks, vocabulary
dimensions, batching with progress, and atomic file writes. Imports nothing from r3hf."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

Passage = str | dict


def encoder_passage_text(passage: Passage) -> str:
    """The text a SIDR passage encoder (and the bag-of-tokens index) reads: `"title [SEP] text"` as in the original
    SiDR code, or the text alone when there is no title. Strings are returned as they are."""
    if isinstance(passage, str):
        return passage
    if isinstance(passage, dict) and "text" in passage:
        title = passage.get("title") or ""
        return f"{title} [SEP] {passage['text']}" if title else passage["text"]
    raise TypeError(
        f"Each passage must be a string or a dict with a 'text' key (and optionally 'title'); got {type(passage).__name__}."
    )


def plain_passage_text(passage: Passage) -> str:
    """`"title text"`: a passage as plain words, for answer matching and lexical baselines."""
    if isinstance(passage, str):
        return passage
    return f"{passage.get('title') or ''} {passage['text']}".strip()


def check_texts(texts: Sequence[Passage] | Passage, allow_dicts: bool = False) -> list[str]:
    """Validate a batch of texts and return it as a list of strings (passage dicts joined with
    [`encoder_passage_text`] when `allow_dicts`)."""
    if isinstance(texts, str | dict):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ValueError("Got an empty list of texts: pass at least one string.")
    out = []
    for i, text in enumerate(texts):
        if allow_dicts:
            out.append(encoder_passage_text(text))
        elif isinstance(text, str):
            out.append(text)
        else:
            raise TypeError(f"Item {i} is a {type(text).__name__}, not a string: pass a list of strings.")
    return out


def zeroed_token_ids(tokenizer) -> list[int]:
    """The special tokens and `[unusedN]` placeholders of a tokenizer: vocabulary dimensions that carry no meaning."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for token, i in tokenizer.get_vocab().items() if token.startswith("[unused") and token.endswith("]"))
    return sorted(ids)


def special_token_ids(tokenizer) -> dict[str, int]:
    """The pad, bos and eos ids a tokenizer defines, as config fields: a model config that holds them is one the
    `Trainer` need not align with its tokenizer (a warning) before training."""
    names = ("pad_token_id", "bos_token_id", "eos_token_id")
    return {name: getattr(tokenizer, name) for name in names if getattr(tokenizer, name, None) is not None}


def vocabulary_fingerprint(tokenizer) -> str:
    """SHA-256 of the tokenizer's (token, id) pairs: two tokenizers with the same fingerprint tokenize alike."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def iter_batches(items: Sequence, batch_size: int, show_progress_bar: bool | None = None, desc: str = "") -> Iterator:
    """Consecutive slices of `items`, with a progress bar (by default only when there are more than 4 batches)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    starts = range(0, len(items), batch_size)
    disable = not show_progress_bar if show_progress_bar is not None else len(starts) < 4
    for start in tqdm(starts, desc=desc, disable=disable):
        yield items[start : start + batch_size]


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (`/proc/self/status`). Elsewhere it is
    set and restored under a lock, which guards only against r3hf's own threads."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write a file to; it replaces `path` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp makes the file private (0600); a saved file gets the permissions `open` would have given it.
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file and a rename, so a crash never leaves it half written."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def staging_dir(parent: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder inside `parent` (so renames out of it stay on one file system), removed afterwards."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".tmp-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ArgumentParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` for r3hf's commands: options are spelled `--kebab-case`, and each also answers to
    `--snake_case`, as the `TrlParser` of the training recipe and `accelerate launch` accept both spellings."""

    def add_argument(self, *name_or_flags: str, **kwargs):
        snake = [f"--{f[2:].replace('-', '_')}" for f in name_or_flags if f.startswith("--") and "-" in f[2:]]
        return super().add_argument(*name_or_flags, *snake, **kwargs)


class DistinctValues(argparse.Action):
    """A list option's action (`nargs="+"`) that refuses a value named twice with a parser error from the parser that
    reads it, so that a command which takes another's flags names its own usage."""

    def __call__(self, parser, namespace, values, option_string=None):
        repeated = list(dict.fromkeys(v for i, v in enumerate(values) if v in values[:i]))
        if repeated:
            parser.error(f"{option_string} names {', '.join(map(str, repeated))} twice; name each once")
        setattr(namespace, self.dest, list(values))


def enable_logging(level: int = logging.INFO) -> None:
    """Show r3hf's own log messages (results, progress notes) on stderr; for command-line entry points."""
    logger = logging.getLogger("r3hf")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or a string such as `"500MB"`, `"2GB"`, `"64KiB"` (decimal and binary units)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(size), flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"Cannot read {size!r} as a size: use bytes or a string such as '500MB' or '2GB'.")
        number, unit, binary = match.groups()
        base = 1024 if binary else 1000
        value = int(float(number) * base ** " KMGT".index(unit.upper() or " "))
    if value < 1:
        raise ValueError(f"A size must be positive, got {size!r}.")
    return value
