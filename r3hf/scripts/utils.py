"""What the demo and the benchmarks share: the demo's retriever and index, a CPU training config, a JSON Lines reader,
a timer, and results files stamped with where and how they were made."""

from __future__ import annotations

import gzip
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..data import load_table
from ..index import BagOfTokensIndex
from ..modeling_sidr import SIDRModel
from ..models import is_sidr_checkpoint, load_retriever
from ..r3_config import R3Config
from ..utils import atomic_write_text
from ..version import __version__

ROOT = Path(__file__).resolve().parents[2]
# The repository's vendored QA data and corpus: the default `--data` of the demo and of every benchmark.
DATA = ROOT / "data"
DEMO_RETRIEVER = "all-minilm-l6-v2"
DEMO_READER = "smollm2-135m-instruct"


def demo_retriever(name_or_path: str = DEMO_RETRIEVER) -> SIDRModel:
    """The demo's starting retriever from an encoder: 32-token queries, 128-token passages; a saved retriever (a
    trained one) as it was saved."""
    if is_sidr_checkpoint(name_or_path):
        return load_retriever(name_or_path)
    return load_retriever(name_or_path, query_max_length=32, passage_max_length=128)


def demo_index(model: SIDRModel, data: str | os.PathLike = DATA, bm25: bool = False) -> BagOfTokensIndex:
    """The bag-of-tokens index of `data/corpus.jsonl.gz` (128 tokens per passage), with a bm25s part if asked."""
    index = BagOfTokensIndex.build(load_table(str(Path(data) / "corpus.jsonl.gz")), model.tokenizer, max_length=128)
    if bm25:
        index.add_bm25()
    return index


def cpu_config(output_dir: str | os.PathLike, **settings: Any) -> R3Config:
    """An [`R3Config`] for a short CPU run: log every step, save nothing, report nowhere, seed 0; `settings` override
    these and set the rest."""
    defaults = dict(
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0
    )
    return R3Config(output_dir=str(output_dir), **{**defaults, **settings})


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a (gzipped) JSON Lines file."""
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as f:
        return [json.loads(line) for line in f]


def timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """`fn(*args, **kwargs)` and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _code_state() -> tuple[str | None, bool | None]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "HEAD") or None, bool(status) if status is not None else None


# Read when a run starts (this module is imported then), not when it writes its results: a commit made during a
# long run would otherwise be stamped on results made by the code before it.
_COMMIT, _DIRTY = _code_state()


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """This machine's float32 matrix-product speed right now (GFLOP/s of `size`² products, warm, on torch's threads).

    Most of a CPU run is matrix products, so its minutes scale with this figure; a VM's can move by half between
    days, and recording it beside a run's times is what makes them comparable."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def provenance() -> dict:
    """Where and how a result was made: r3hf's version and commit when the run started (and whether the tree had
    changes then), the machine and its [`matmul_gflops`] when the run finished, the threads, the command line and
    the time it finished."""
    return {
        "r3hf": __version__,
        "commit": _COMMIT,
        "dirty": _DIRTY,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "matmul_gflops": round(matmul_gflops(), 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "argv": sys.argv,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(path: str | os.PathLike, report: dict) -> Path:
    """Write a results file (JSON) with its [`provenance`], atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**report, "provenance": provenance()}, indent=1))
    return path
