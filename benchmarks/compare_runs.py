"""Paired differences between retrievers saved by different runs, on the questions they share.

Each argument is a predictions folder as the demo and the benchmarks write them (`<set>_predictions.jsonl` per test
set). The first is compared with each of the others: per test set, RAG accuracy@1 and answer recall@1, with a paired
bootstrap 95% interval, on the questions (by id) both answered. Prints a Markdown table; `--out` also writes JSON.

    .venv/bin/python benchmarks/compare_runs.py benchmarks/results/online_rag_fusion/predictions/r3_hybrid@hybrid \
        benchmarks/results/demo_500/predictions/initial@hybrid benchmarks/results/demo_500/predictions/bm25s
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from r3hf import compare_predictions
from r3hf.scripts.utils import read_jsonl, write_result
from r3hf.utils import ArgumentParser

METRICS = {"correct@1": "RAG accuracy@1", "recall@1": "answer recall@1"}


def shared_records(a: Path, b: Path) -> dict[str, tuple[list[dict], list[dict]]]:
    """Per test set both folders hold, the two runs' records of the questions both answered, in `a`'s order."""
    pairs = {}
    for path in sorted(a.glob("*_predictions.jsonl")):
        other = b / path.name
        if not other.exists():
            continue
        theirs = {r["id"]: r for r in read_jsonl(other)}
        ours = [r for r in read_jsonl(path) if r["id"] in theirs]
        pairs[path.name.removesuffix("_predictions.jsonl")] = (ours, [theirs[r["id"]] for r in ours])
    if not pairs:
        raise SystemExit(f"{a} and {b} share no <set>_predictions.jsonl file: give two predictions folders.")
    return pairs


def main(argv: Sequence[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="the predictions folder compared with each of the others")
    parser.add_argument("others", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="also write the differences here (JSON)")
    args = parser.parse_args(argv)
    for folder in (args.first, *args.others):
        if not folder.is_dir():
            parser.error(f"no folder {folder}: give a predictions folder an earlier run wrote")
    results: dict[str, dict] = {}
    print(f"| test set | {args.first} minus | questions | " + " | ".join(METRICS.values()) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for other in args.others:
        for name, (ours, theirs) in shared_records(args.first, other).items():
            diffs = {m: compare_predictions(ours, theirs, m) for m in METRICS}
            results.setdefault(name, {})[str(other)] = diffs
            cells = [
                f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]" for d in diffs.values()
            ]
            print(f"| {name} | {other} | {len(ours)} | " + " | ".join(cells) + " |")
    if args.out:
        write_result(args.out, {"first": str(args.first), "results": results})
    return results


if __name__ == "__main__":
    main()
