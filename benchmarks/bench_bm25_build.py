"""The bm25s part's build at scale with bm25s's two CSC builders: its NumPy one (an argsort of packed 64-bit keys)
and its compiled counting sort (`BM25.activate_numba_csc`, used by r3hf from `r3hf.index.bm25.COMPILED_CSC_FROM`
passages on when numba is installed). On a corpus recombined from the shared passages (as `bench_scale.py`).

Each build runs in its own process, one after the other: wall-clock seconds of the whole build (tokenizing included),
and the peak resident memory above the process's memory just before the build (sampled every 20 ms), with SHA-256 of
the three score arrays to show that both builders give the same index.

    python benchmarks/bench_bm25_build.py --size 1000000 --out benchmarks/results/bm25_build.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_scale import recombined_parquet

from r3hf.scripts.utils import DATA, read_jsonl, write_result
from r3hf.utils import ArgumentParser

CHILD = r"""
import hashlib, json, sys, threading, time, types
import datasets, psutil
from r3hf.index import bm25

parquet, compiled = sys.argv[1], sys.argv[2] == "compiled"
corpus = datasets.Dataset.from_parquet(parquet, cache_dir=sys.argv[3])
bm25.COMPILED_CSC_FROM = 0 if compiled else float("inf")
process = psutil.Process()
baseline = peak = process.memory_info().rss
done = threading.Event()

def sample():
    global peak
    while not done.wait(0.02):
        peak = max(peak, process.memory_info().rss)

threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
part = bm25.BM25Retriever(types.SimpleNamespace(corpus=corpus))  # only the corpus is read when building
seconds = time.perf_counter() - start
done.set()
scores = part.bm25.scores
print(json.dumps({
    "build_s": seconds,
    "peak_above_baseline_bytes": max(peak, process.memory_info().rss) - baseline,
    "entries": int(scores["indptr"][-1]),
    "sha256": {k: hashlib.sha256(scores[k].tobytes()).hexdigest() for k in ("data", "indices", "indptr")},
}))
"""


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--size", type=int, default=1_000_000, help="recombined passages")
    parser.add_argument("--out", default="benchmarks/results/bm25_build.json")
    args = parser.parse_args()
    if args.size < 1:
        parser.error(f"--size must be at least 1 passage, got {args.size}.")

    work = Path(tempfile.mkdtemp(prefix="r3hf-bm25-build-"))
    parquet = work / f"recombined-{args.size}.parquet"
    recombined_parquet(read_jsonl(Path(args.data) / "corpus.jsonl.gz"), args.size, parquet)
    rows = {}
    for builder in ("numpy", "compiled"):
        print(f"building with the {builder} CSC builder ...", flush=True)
        child = [sys.executable, "-c", CHILD, str(parquet), builder, str(work / "datasets")]
        rows[builder] = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
        print(
            f"{builder}: {rows[builder]['build_s']:.0f} s, peak {rows[builder]['peak_above_baseline_bytes'] / 2**20:,.0f}"
            f" MB above the process's baseline, {rows[builder]['entries']:,} entries",
            flush=True,
        )
    same = rows["numpy"]["sha256"] == rows["compiled"]["sha256"]
    report = {
        "passages": args.size,
        "corpus": "recombined",
        "builders": rows,
        "identical_arrays": same,
        "peak_ratio_compiled_over_numpy": rows["compiled"]["peak_above_baseline_bytes"]
        / rows["numpy"]["peak_above_baseline_bytes"],
        "time_ratio_compiled_over_numpy": rows["compiled"]["build_s"] / rows["numpy"]["build_s"],
    }
    write_result(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "builders"}, indent=1))
    if not same:
        sys.exit("the two builders gave different arrays")


if __name__ == "__main__":
    main()
