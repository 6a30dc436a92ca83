"""Where stage 1 mines its hard negatives: does mining them from bm25s lift the hybrid pipeline's answer recall@1?

In the hybrid pipeline the final ranking fuses E(q)·E(d) with bm25s's ranking, so what the trained retriever has to
fix is where bm25s is wrong. The demo's stage 1 mines each question's hard negative (where the calibration gave it no
offline one) as the best bag-of-tokens match without a gold answer, so it learns to beat the bag of tokens' mistakes,
not bm25s's. This trains the demo's stage 1 (the cpu-long settings: the same calibration, 60 steps of 16 questions)
once per `--first-stages` choice of where to mine, each from the initial retriever, and measures answer recall@1 and
@5 on the demo's 500 + 500 test questions in both pipelines (hybrid: each retriever's own fusion, chosen on the dev
questions), with paired bootstrap 95% intervals against the initial retriever and against the demo's stage 1
(bag-of-tokens negatives). No reader answers here beyond the calibration's labelling: RAG accuracy is left to
`bench_online_steps.py --stage1-first-stage ...`. Writes `--out` (JSON) and a plot beside it (`.png`).

    .venv/bin/python benchmarks/bench_stage1_negatives.py --out benchmarks/results/stage1_negatives.json
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from bench_online_steps import load_demo, passthrough_parser

from r3hf import compare_predictions
from r3hf.retrieval import FIRST_STAGES
from r3hf.scripts.utils import demo_retriever, write_result
from r3hf.utils import enable_logging

logger = logging.getLogger("r3hf.bench_stage1_negatives")
METRICS = ("recall@1", "recall@5")


def plot(results: dict, reference: str, path: Path) -> None:
    """Paired differences in answer recall@1 against `reference`, per test set and pipeline, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results)
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        pairs = {k: v["recall@1"] for k, v in results[name]["paired_differences"].items() if k.endswith(reference)}
        labels = [k.removesuffix(f" - {reference}") for k in pairs]
        diffs = [100 * v["difference"] for v in pairs.values()]
        errors = [
            [100 * (v["difference"] - v["low"]) for v in pairs.values()],
            [100 * (v["high"] - v["difference"]) for v in pairs.values()],
        ]
        ax.errorbar(diffs, range(len(labels)), xerr=errors, fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel(f"answer recall@1 − {reference} (points, 95% CI)")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    demo = load_demo()
    parser = passthrough_parser(__doc__)
    parser.add_argument("--first-stages", nargs="+", choices=FIRST_STAGES, default=list(FIRST_STAGES))
    parser.add_argument("--output-dir", default="outputs/stage1_negatives")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stage1_negatives.json"))
    ours, demo_flags = parser.parse_known_args(argv)
    if "bag_of_tokens" not in ours.first_stages:
        parser.error("--first-stages must include bag_of_tokens: the demo's own stage 1 is the reference")
    args = demo.parse_args(["--preset", "cpu-long", "--output-dir", ours.output_dir, *demo_flags])
    enable_logging()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    model, index, train, tests = demo.load_run(args)
    reward = demo.build_reward(args)
    choose = demo.fusion_chooser(args, index, reward.reader)
    evaluators = demo.rag_evaluators(tests, index, None, args.rerank_top_m, {name: {} for name in tests})
    predictions: dict[str, dict[str, list[dict]]] = {name: {} for name in tests}
    fusions, seconds = {}, {}

    def evaluate(label: str, retriever) -> None:
        began = time.time()
        fusions[label], by_key = demo.predict_with_own_fusion(retriever, choose, evaluators)
        for (name, pipeline), records in by_key.items():
            predictions[name][f"{label} @ {pipeline}"] = records
        seconds[f"evaluation: {label}"] = time.time() - began
        logger.info(f"{label}: evaluated, dev fusion {fusions[label]['fusion']} ({time.time() - start:.0f}s)")

    evaluate("initial", model)
    fusion = fusions["initial"]
    hybrid = {"first_stage": "hybrid", "fusion": fusion["fusion"], "fusion_weight": fusion["fusion_weight"]}
    demo.resolve_bm25_residual(args, fusion)
    began = time.time()
    subset, calibration = demo.calibrate(model, index, train, reward, args, out, hybrid)
    seconds["calibration"] = time.time() - began
    stage1_train = demo.stage1_questions(train, subset, reward.calibration, args.stage1_questions)
    offline_steps = demo.steps(args.offline_epochs, args.offline_steps, len(stage1_train), args.batch_size)
    for first_stage in ours.first_stages:
        began = time.time()
        stage_args = copy.copy(args)
        stage_args.stage1_first_stage = first_stage
        trained, _ = demo.train_stage(
            demo_retriever(args.retriever),
            reward,
            index,
            stage1_train,
            stage_args,
            out,
            f"stage1_{first_stage}",
            offline_steps,
        )
        seconds[f"training: stage1_{first_stage}"] = time.time() - began
        evaluate(f"stage1 ({first_stage} negatives)", trained)

    reference = "stage1 (bag_of_tokens negatives)"
    results = {}
    for name in tests:
        by_label = predictions[name]
        evaluator = evaluators[(name, "hybrid")]
        metrics = {
            label: {k.removeprefix(f"{name}_"): v for k, v in evaluator.compute_metrics(records).items()}
            for label, records in by_label.items()
        }
        pairs = {
            f"{label} - {base} @ {pipeline}": {
                m: compare_predictions(records, by_label[f"{base} @ {pipeline}"], m) for m in METRICS
            }
            for pipeline in demo.PIPELINES
            for base in ("initial", reference)
            if f"{base} @ {pipeline}" in by_label
            for label, records in by_label.items()
            if label.startswith("stage1") and label.endswith(f"@ {pipeline}") and label != f"{base} @ {pipeline}"
        }
        results[name] = {"metrics": metrics, "paired_differences": pairs}
        print(f"\n{name} ({len(tests[name])} questions): answer recall@1 / @5")
        for label, m in metrics.items():
            print(f"| {label} | {100 * m['answer_recall@1']:.1f} | {100 * m['answer_recall@5']:.1f} |")
        for key, d in pairs.items():
            v = d["recall@1"]
            print(f"{key}: recall@1 {100 * v['difference']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]")
    summary = {
        "results": results,
        "evaluation_fusion": fusions,
        "calibration": calibration,
        "offline_steps": offline_steps,
        "demo_args": vars(args),
        "bench_args": {k: str(v) for k, v in vars(ours).items()} | {"demo_flags": demo_flags},
        "seconds": seconds | {"total": time.time() - start},
    }
    write_result(ours.out, summary)
    plot(results, "initial @ hybrid", ours.out.with_suffix(".png"))
    print(f"\nWrote {ours.out} and {ours.out.with_suffix('.png')}")
    return summary


if __name__ == "__main__":
    main()
