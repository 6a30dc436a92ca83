"""Paired differences between retrievers saved by different runs, on the questions they share.

Each argument is a predictions folder as the demo and the benchmarks write them (`<set>_predictions.jsonl` per test
set). The first is compared with each of the others: per test set, RAG accuracy@1 and answer recall@1, with a paired
bootstrap 95% interval, on the questions (by id) both answered. Prints a Markdown table; `--out` also writes JSON
and, beside it, a plot of the RAG accuracy@1 differences (`.png`).

    .venv/bin/python benchmarks/compare_runs.py benchmarks/results/online_rag_fusion/predictions/r3_hybrid@hybrid \
        benchmarks/results/demo_500/predictions/initial@hybrid benchmarks/results/demo_500/predictions/bm25s

`--first-seeds` adds other training runs (seeds) of the first retriever: the difference is then their mean's, and
the interval resamples runs as well as questions (`r3hf.seeded_paired_bootstrap`), on the questions every folder
answered, so that it covers the variance between training runs too.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from r3hf import compare_predictions, compare_predictions_across_seeds
from r3hf.scripts.utils import read_jsonl, write_result
from r3hf.utils import ArgumentParser

METRICS = {"correct@1": "RAG accuracy@1", "recall@1": "answer recall@1"}


def shared_records(folders: Sequence[Path]) -> dict[str, list[list[dict]]]:
    """Per test set every folder holds, each folder's records of the questions all of them answered, in the first
    folder's order."""
    shared = {}
    for path in sorted(folders[0].glob("*_predictions.jsonl")):
        if not all((folder / path.name).exists() for folder in folders[1:]):
            continue
        runs = [{r["id"]: r for r in read_jsonl(folder / path.name)} for folder in folders]
        ids = [i for i in runs[0] if all(i in run for run in runs[1:])]
        shared[path.name.removesuffix("_predictions.jsonl")] = [[run[i] for i in ids] for run in runs]
    if not shared:
        raise SystemExit(
            f"{', '.join(map(str, folders))} share no <set>_predictions.jsonl file: give predictions folders."
        )
    return shared


def points(share: float) -> str:
    """A difference of shares in signed points, one decimal; float noise around 0 (a bootstrap quantile) is 0."""
    return f"{100 * share if abs(share) > 1e-9 else 0.0:+.1f}"


def plot(results: dict, first: str, path: Path) -> None:
    """The RAG accuracy@1 differences with their intervals, one row per test set and compared run, as the demo
    draws them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench_online_steps import load_demo

    rows = {
        name: {"paired_differences": {f"{first} - {other}": d for other, d in by_other.items()}}
        for name, by_other in results.items()
    }
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.45 * sum(len(r["paired_differences"]) for r in rows.values())))
    load_demo().plot_differences(ax, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="the predictions folder compared with each of the others")
    parser.add_argument("others", type=Path, nargs="+")
    parser.add_argument(
        "--first-seeds",
        type=Path,
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="predictions folders of other training runs of the first retriever (other seeds)",
    )
    parser.add_argument("--out", type=Path, help="also write the differences here (JSON)")
    args = parser.parse_args(argv)
    for folder in (args.first, *args.first_seeds, *args.others):
        if not folder.is_dir():
            parser.error(f"no folder {folder}: give a predictions folder an earlier run wrote")
    firsts = [args.first, *args.first_seeds]
    results: dict[str, dict] = {}
    runs = f" ({len(firsts)} runs)" if args.first_seeds else ""
    print(f"| test set | {args.first}{runs} minus | questions | " + " | ".join(METRICS.values()) + " |")
    print("|---|---|---|" + "---|" * len(METRICS))
    for other in args.others:
        for name, records in shared_records([*firsts, other]).items():
            ours, theirs = records[:-1], records[-1:]
            diffs = {
                m: compare_predictions_across_seeds(ours, theirs, m)
                if args.first_seeds
                else compare_predictions(ours[0], theirs[0], m)
                for m in METRICS
            }
            results.setdefault(name, {})[str(other)] = diffs
            cells = [f"{points(d['difference'])} [{points(d['low'])}, {points(d['high'])}]" for d in diffs.values()]
            print(f"| {name} | {other} | {len(theirs[0])} | " + " | ".join(cells) + " |")
    if args.out:
        write_result(
            args.out,
            {"first": str(args.first), "first_seeds": [str(f) for f in args.first_seeds], "results": results},
        )
        names = [other.name for other in args.others]
        short = {str(o): n if names.count(n) == 1 else str(o) for o, n in zip(args.others, names)}
        named = {name: {short[other]: d for other, d in by_other.items()} for name, by_other in results.items()}
        plot(named, args.first.name + runs, args.out.with_suffix(".png"))
    return results


if __name__ == "__main__":
    main()
