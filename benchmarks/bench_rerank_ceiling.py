"""How far could any re-ranking of the hybrid pipeline's candidates lift RAG accuracy?

RAG accuracy@1 hands the reader one passage, the pipeline's first. A re-ranker can only reorder the candidates it
is given, so its best possible RAG accuracy@1 is the share of questions the reader answers correctly from at least one
of them. This reads each of a retriever's top `--top-k` hybrid passages (the demo's pipeline: the union of the
bag-of-tokens and bm25s top 10, each retriever's own fusion chosen on the dev questions) on its own, for the demo's
500 + 500 test questions, and reports per k the reader's accuracy from the first passage, the oracle share answered
from one of the first k, and answer recall@k. Writes `--out` (JSON) and a plot beside it (`.png`).

`--trained` (repeatable, `LABEL=PATH`) adds trained retrievers to the initial one; `--reuse-generations` seeds the
generation cache from earlier runs' predictions folders, as in `bench_online_steps.py`. Any other flag is the demo's
(recipes/demo.py --help), applied over its cpu-long preset.

    .venv/bin/python benchmarks/bench_rerank_ceiling.py --top-k 4 \\
        --reuse-generations benchmarks/results/demo_500/predictions \\
        --reuse-generations benchmarks/results/online_rag_fusion/predictions \\
        --out benchmarks/results/rerank_ceiling.json
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bench_online_steps import (
    check_reuse_generations,
    load_demo,
    passthrough_parser,
    seeded_generations,
    trained_paths,
)

from r3hf import SIDRModel, paired_bootstrap
from r3hf.evaluation import first_answer_rank, has_answer
from r3hf.retrieval import cached_passage_embeddings
from r3hf.scripts.utils import write_result
from r3hf.utils import enable_logging

logger = logging.getLogger("r3hf.bench_rerank_ceiling")


def read_each(reader, index, questions: list[str], answers: list[list[str]], rows, cache: dict) -> list[list[bool]]:
    """Whether the reader answers each question correctly from each of its passages alone (`rows`: `[n, k]` corpus
    rows); `cache` holds generations keyed `(question row, (passage row,))`, as `RAGEvaluator` keys them."""
    keys = [[(i, (int(row),)) for row in candidates if row >= 0] for i, candidates in enumerate(rows.tolist())]
    todo = list(dict.fromkeys(key for per_question in keys for key in per_question if key not in cache))
    if todo:
        generations = reader.generate(
            [questions[i] for i, _ in todo],
            [index.get_passages(list(passage)) for _, passage in todo],
            show_progress_bar=True,
        )
        cache.update(zip(todo, generations))
    return [[has_answer(cache[key], answers[key[0]]) for key in per_question] for per_question in keys]


def plot(results: dict, path: Path) -> None:
    """Per test set: the oracle share answered from one of the first k passages, against k, per retriever."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.8), squeeze=False)
    for ax, (name, by_label) in zip(axes[0], results.items()):
        for label, m in by_label.items():
            ks = sorted(int(k) for k in m["oracle"])
            line = ax.plot(ks, [100 * m["oracle"][str(k)] for k in ks], marker="o", label=f"{label}: one of the top k")
            ax.axhline(100 * m["rag_accuracy@1"], ls="--", color=line[0].get_color(), label=f"{label}: the top 1")
        ax.set_xticks(ks)
        ax.set_xlabel("k (candidates the reader may answer from)")
        ax.set_ylabel("questions answered (%)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    demo = load_demo()
    parser = passthrough_parser(__doc__)
    parser.add_argument("--top-k", type=int, default=4, help="candidates read per question (the reward scores 4)")
    parser.add_argument("--trained", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--reuse-generations", type=Path, action="append")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/rerank_ceiling.json"))
    ours, demo_flags = parser.parse_known_args(argv)
    trained = trained_paths(parser, ours.trained, "r3_hybrid=outputs/rag_fusion/r3_hybrid_long/checkpoint-8")
    check_reuse_generations(parser, ours.reuse_generations)
    args = demo.parse_args(["--preset", "cpu-long", *demo_flags])
    if not 1 <= ours.top_k <= args.rerank_top_m:
        parser.error(f"--top-k {ours.top_k}: pick from 1 to the {args.rerank_top_m} candidates of each first stage")
    enable_logging()
    start = time.time()

    model, index, _, tests = demo.load_run(args)
    reader = demo.build_reward(args).reader
    choose = demo.fusion_chooser(args, index, reader)
    caches = seeded_generations(ours.reuse_generations, tests, index) if ours.reuse_generations else {}
    retrievers = {"initial": model} | {label: SIDRModel.from_pretrained(path) for label, path in trained.items()}
    results: dict[str, dict] = {name: {} for name in tests}
    fusions = {}
    for label, retriever in retrievers.items():
        with cached_passage_embeddings(retriever):
            fusions[label] = fusion = choose(retriever)
            for name, ds in tests.items():
                questions, answers = list(ds["question"]), list(ds["answers"])
                rows = retriever.retrieve(
                    questions,
                    index,
                    k=ours.top_k,
                    rerank_top_m=args.rerank_top_m,
                    first_stage="hybrid",
                    fusion=fusion["fusion"],
                    fusion_weight=fusion["fusion_weight"],
                ).rows
                correct = read_each(reader, index, questions, answers, rows, caches.setdefault(name, {}))
                ranks = [first_answer_rank(p, a) for p, a in zip(index.get_passages(rows.tolist()), answers)]
                ks = range(1, ours.top_k + 1)
                results[name][label] = {
                    "rag_accuracy@1": sum(c[0] for c in correct) / len(correct),
                    "oracle": {str(k): sum(any(c[:k]) for c in correct) / len(correct) for k in ks},
                    "answer_recall": {str(k): sum(r is not None and r < k for r in ranks) / len(ranks) for k in ks},
                    "oracle_minus_top1": paired_bootstrap(
                        [float(any(c)) for c in correct], [float(c[0]) for c in correct]
                    ),
                    "n": len(correct),
                }
                logger.info(f"{label} on {name}: {results[name][label]} ({time.time() - start:.0f}s)")

    print(f"\n| test set | retriever @ hybrid | RAG acc@1 | one of the top k, k = 1..{ours.top_k} | answer recall@k |")
    print("|---|---|---|---|---|")
    for name, by_label in results.items():
        for label, m in by_label.items():
            oracle = " / ".join(f"{100 * v:.1f}" for v in m["oracle"].values())
            recall = " / ".join(f"{100 * v:.1f}" for v in m["answer_recall"].values())
            print(f"| {name} | {label} | {100 * m['rag_accuracy@1']:.1f} | {oracle} | {recall} |")
    summary = {
        "results": results,
        "evaluation_fusion": fusions,
        "demo_args": vars(args),
        "bench_args": {k: str(v) for k, v in vars(ours).items()} | {"demo_flags": demo_flags},
        "seconds": time.time() - start,
    }
    write_result(ours.out, summary)
    plot(results, ours.out.with_suffix(".png"))
    print(f"\nWrote {ours.out} and {ours.out.with_suffix('.png')}")
    return summary


if __name__ == "__main__":
    main()
