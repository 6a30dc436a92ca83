"""Which dev questions should choose the hybrid pipeline's fusion: both sets' pooled, or each test set's own?

The demo chooses each retriever's final ranking in the hybrid pipeline (E(q)·E(d) alone, RRF, or a weighted fusion
with bm25s's rank) once, on the nq and squad dev questions pooled, and uses it on both test sets. A user who deploys
on one kind of question would tune it on that kind alone. This evaluates saved retrievers both ways on the demo's
500 + 500 test questions, each test set's own choice made on the first `--dev-samples` questions of its dev split
(nq_dev for nq_test, squad_dev for squad_test; never on a test set), and reports paired bootstrap intervals of each
trained retriever against the initial one under each choice, and of each choice against the other. Writes `--out`
(JSON), a plot of the differences (`.png`) and the per-question results beside it
(`<out without .json>/<label>@hybrid_<pooled_dev|own_dev>/<set>_predictions.jsonl`).

`--trained` (repeatable, `LABEL=PATH`) adds trained retrievers to the initial one; `--reuse-generations` seeds the
generation cache from earlier runs' predictions folders, as in `bench_online_steps.py`. Any other flag is the demo's
(recipes/demo.py --help), applied over its cpu-long preset.

    .venv/bin/python benchmarks/bench_fusion_dev.py --trained stage1=outputs/bm25_negatives/stage1 \\
        --trained r3_hybrid=outputs/bm25_negatives/r3_hybrid_long \\
        --reuse-generations benchmarks/results/demo_500/predictions \\
        --reuse-generations benchmarks/results/online_bm25_negatives/predictions \\
        --out benchmarks/results/fusion_dev.json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bench_online_steps import (
    check_reuse_generations,
    check_reused,
    load_demo,
    passthrough_parser,
    seeded_generations,
    trained_paths,
)

from r3hf import SIDRModel, compare_predictions
from r3hf.evaluation import select_fusion
from r3hf.retrieval import cached_passage_embeddings
from r3hf.scripts.utils import write_result
from r3hf.utils import enable_logging

logger = logging.getLogger("r3hf.bench_fusion_dev")

# How each retriever's fusion is chosen, and the slug of its predictions folder.
CHOICES = {"pooled dev": "pooled_dev", "own dev": "own_dev"}


def plot(demo, results: dict, path: Path) -> None:
    """The paired differences in RAG accuracy@1, as the demo draws them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    demo.plot_differences(ax, results)
    ax.set_title("Hybrid fusion chosen on both dev sets pooled, or on each set's own", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    demo = load_demo()
    parser = passthrough_parser(__doc__)
    parser.add_argument("--trained", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--reuse-generations", type=Path, action="append")
    parser.add_argument("--check-reused", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fusion_dev.json"))
    ours, demo_flags = parser.parse_known_args(argv)
    trained = trained_paths(parser, ours.trained, "r3_hybrid=outputs/bm25_negatives/r3_hybrid_long", required=True)
    check_reuse_generations(parser, ours.reuse_generations)
    args = demo.parse_args(["--preset", "cpu-long", *demo_flags])
    enable_logging()
    start = time.time()

    model, index, _, tests = demo.load_run(args)
    reader = demo.build_reward(args).reader
    pooled = demo.fusion_chooser(args, index, reader)
    devs = demo.question_sets(Path(args.data), "dev", args.dev_samples)
    caches = {name: {} for name in tests}
    checked = 0
    if ours.reuse_generations:
        caches = seeded_generations(ours.reuse_generations, tests, index)
        checked = check_reused(reader, caches, tests, index, ours.check_reused)
    evaluators = {
        name: evaluator
        for (name, _), evaluator in demo.rag_evaluators(
            tests, index, reader, args.rerank_top_m, caches, pipelines=("hybrid",)
        ).items()
    }
    retrievers = {"initial": model} | {label: SIDRModel.from_pretrained(path) for label, path in trained.items()}
    records: dict[str, dict[tuple[str, str], list[dict]]] = {name: {} for name in tests}
    fusions: dict[str, dict] = {}
    for label, retriever in retrievers.items():
        with cached_passage_embeddings(retriever):
            fusions[f"{label}, pooled dev"] = pooled(retriever)
            for name, evaluator in evaluators.items():
                dev = devs[name.replace("_test", "_dev")]
                own = select_fusion(
                    retriever, index, dev["question"], dev["answers"], args.rerank_top_m, fusions=args.fusions
                )
                fusions[f"{label}, {name.replace('_test', '_dev')}"] = own
                for choice, fusion in zip(CHOICES, (fusions[f"{label}, pooled dev"], own)):
                    evaluator.fusion, evaluator.fusion_weight = fusion["fusion"], fusion["fusion_weight"]
                    records[name][(label, choice)] = evaluator.predict(retriever)
                    folder = ours.out.with_suffix("") / f"{label}@hybrid_{CHOICES[choice]}"
                    evaluator.save_predictions(records[name][(label, choice)], folder)
                    fused = f"{fusion['fusion']} {fusion['fusion_weight']}"
                    logger.info(f"{label}, {choice}, {name}: {fused} ({time.time() - start:.0f}s)")

    results = {}
    for name, by_key in records.items():
        evaluator = evaluators[name]
        metrics = {
            f"{label} @ hybrid, {choice}": {
                k.removeprefix(f"{name}_"): v for k, v in evaluator.compute_metrics(recs).items()
            }
            for (label, choice), recs in by_key.items()
        }
        pairs = {}
        for label in list(retrievers)[1:]:
            for choice in CHOICES:
                pairs[f"{label} - initial, both on {choice}"] = (by_key[(label, choice)], by_key[("initial", choice)])
        for label in retrievers:
            pairs[f"{label}: own dev - pooled dev"] = (by_key[(label, "own dev")], by_key[(label, "pooled dev")])
        differences = {
            pair: {m: compare_predictions(a, b, m) for m in ("correct@1", "recall@1")}
            for pair, (a, b) in pairs.items()
        }
        results[name] = {"metrics": metrics, "paired_differences": differences}

    print()
    demo.print_tables(results)
    summary = {
        "results": results,
        "evaluation_fusion": fusions,
        "reused_generations": {name: len(c) for name, c in caches.items()} | {"checked": checked},
        "demo_args": vars(args),
        "bench_args": {k: str(v) for k, v in vars(ours).items()} | {"demo_flags": demo_flags},
        "seconds": time.time() - start,
    }
    write_result(ours.out, summary)
    plot(demo, results, ours.out.with_suffix(".png"))
    print(f"\nWrote {ours.out} and {ours.out.with_suffix('.png')}")
    return summary


if __name__ == "__main__":
    main()
