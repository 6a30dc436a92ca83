"""A longer on-policy stage in the hybrid pipeline: does it lift RAG accuracy over the initial retriever?

The demo's cpu-long run trains `r3_hybrid` on-policy for 8 steps of 16 questions, 128 questions in all, and its
R3 (hybrid) − initial (hybrid) RAG accuracy@1 stays within about a point of 0. This repeats that run's calibration and
stage 1 (the cpu-long settings), then trains one on-policy stage in the hybrid pipeline for `--online-steps` steps,
saving the retriever every `--eval-every` steps (checkpoints of one run: the learning rate decays over all of its
steps), and evaluates the initial retriever and every checkpoint in the hybrid pipeline on the demo's 500 + 500 test
questions, each with its own fusion chosen on the dev questions, as the demo does. Writes `--out` (JSON) and, beside
it, a plot of the training and of the paired differences (`.png`). `--reward generation` trains on-policy with the
reader's own answers ([`GenerationReward`]) instead of the answer-probability proxy, `--online-learning-rate` with
another learning rate, `--online-retrieval-top-k` with the reward scoring more of each question's hybrid candidates
than the demo's 4, and `--positive-fallback skip` with only the questions the reward found a positive for.
`--calibration-samples`, `--calibration-top-k` and `--calibration-first-stage hybrid` give stage 1 larger offline
pools, labelled by generation over the initial retriever's hybrid candidates; `--stage1-questions` trains stage 1 on
the calibrated questions alone (`pooled`: those with both a right and a wrong answer, as the paper), for
`--offline-steps` steps, and `--stage1-first-stage bm25` mines stage 1's hard negatives from bm25s;
`--bm25-residual-weight fusion` trains stage 1 and the on-policy stage on E(q)·E(d) fused with bm25s's score, so that
the retriever learns what bm25s misses; `--train-sets nq` trains on one set's questions alone (one retriever per
dataset, as the paper); `--seed` trains with another seed; `--evaluate-stage1` evaluates stage 1 too. Labels that an
earlier run wrote to `--output-dir` for the same questions and candidates are read back, not generated again.

The reader generates greedily, so an answer depends only on the question and the passage: `--reuse-generations`
(repeatable) seeds the generation cache from earlier runs' per-question results (their `predictions` folders) and first
regenerates `--check-reused` of the seeded pairs, refusing to go on if any comes out different.

    .venv/bin/python benchmarks/bench_online_steps.py --online-steps 32 --eval-every 16 \\
        --reuse-generations benchmarks/results/demo_500/predictions --out benchmarks/results/online_steps.json
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import random
import time
from pathlib import Path

from r3hf import SIDRModel, compare_predictions
from r3hf.scripts.utils import ROOT, read_jsonl, write_result
from r3hf.utils import ArgumentParser, DistinctValues, enable_logging

logger = logging.getLogger("r3hf.bench_online_steps")


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "recipes" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def passthrough_parser(description: str) -> ArgumentParser:
    """The parser of a benchmark that hands every flag it does not know to the demo, over the cpu-long preset."""
    return ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other flag is the demo's (recipes/demo.py --help), applied over its cpu-long preset.",
    )


def check_reuse_generations(parser: ArgumentParser, folders: list[Path] | None) -> None:
    """A parser error for any `--reuse-generations` folder that does not exist (it would silently reuse nothing)."""
    missing = [str(folder) for folder in folders or [] if not folder.is_dir()]
    if missing:
        parser.error(f"--reuse-generations: no folder {', '.join(missing)}; give an earlier run's predictions folder")


def trained_paths(parser: ArgumentParser, specs: list[str], example: str, required: bool = False) -> dict[str, str]:
    """`--trained LABEL=PATH` flags as `{label: path}`; a parser error for one without a label, one labelled
    `initial` (the demo's start, which every bench evaluates under that label), or none where one is `required`."""
    if (required and not specs) or any(spec.partition("=")[0] in ("", spec, "initial") for spec in specs):
        parser.error(
            f"--trained takes LABEL=PATH with a label other than 'initial' (the demo's start), e.g. {example}"
        )
    return dict(spec.split("=", 1) for spec in specs)


def seeded_generations(folders: list[Path], tests: dict, index) -> dict[str, dict]:
    """Generation caches keyed as `RAGEvaluator` keys them, `(question row, (passage row,))`, from every
    `*/<test set>_predictions.jsonl` under each of `folders`."""
    passage_row = {pid: row for row, pid in enumerate(index.corpus["id"])}
    caches = {}
    for name, ds in tests.items():
        question_row = {qid: i for i, qid in enumerate(ds["id"])}
        cache = caches[name] = {}
        for path in sorted(p for folder in folders for p in folder.glob(f"*/{name}_predictions.jsonl")):
            for record in read_jsonl(path):
                if record["id"] in question_row and "generation@1" in record:
                    key = (question_row[record["id"]], (passage_row[record["retrieved_ids"][0]],))
                    cache[key] = record["generation@1"]
        logger.info(f"{name}: {len(cache)} generations reused from {', '.join(map(str, folders))}")
    return caches


def check_reused(reader, caches: dict, tests: dict, index, n: int) -> int:
    """Regenerate `n` seeded pairs (spread over the test sets); raises if any differs. Returns how many were
    checked."""
    rng = random.Random(0)
    pairs = [(name, key) for name, cache in caches.items() for key in cache]
    sample = rng.sample(pairs, min(n, len(pairs)))
    if not sample:
        return 0
    questions = [tests[name][key[0]]["question"] for name, key in sample]
    passages = [index.get_passages(list(key[1])) for _, key in sample]
    fresh = reader.generate(questions, passages, show_progress_bar=True)
    differ = [(name, key) for (name, key), g in zip(sample, fresh) if g != caches[name][key]]
    if differ:
        raise RuntimeError(
            f"{len(differ)} of {len(sample)} reused generations differ from the reader's answer now (e.g. {differ[0]}):"
            " the earlier run used another reader or prompt. Run without --reuse-generations."
        )
    return len(sample)


def main() -> None:
    demo = load_demo()
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--online-steps", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=16, help="steps between evaluated checkpoints")
    parser.add_argument("--eval-samples", type=int, default=500, help="questions per test set")
    parser.add_argument("--output-dir", default="outputs/online_steps")
    parser.add_argument(
        "--reuse-generations",
        type=Path,
        action="append",
        help="an earlier demo or bench run's predictions folder (repeat the flag for several)",
    )
    parser.add_argument("--check-reused", type=int, default=16)
    parser.add_argument(
        "--compare",
        type=Path,
        help="an earlier demo run's predictions folder: its r3_hybrid@hybrid, with the steps, training and fusion of "
        "that run (its JSON records them), is compared too",
    )
    parser.add_argument(
        "--online-learning-rate", type=float, help="the on-policy stage's learning rate (default: the preset's)"
    )
    parser.add_argument(
        "--online-retrieval-top-k", type=int, help="passages the reward scores per on-policy question (default: 4)"
    )
    demo.add_labelling_flags(parser)  # defaults: the cpu-long preset's
    parser.add_argument(
        "--offline-steps", type=int, help="stage 1's steps (default: the cpu-long preset's 60, of 16 questions each)"
    )
    parser.add_argument(
        "--train-sets",
        nargs="+",
        choices=demo.TRAIN_SETS,
        action=DistinctValues,
        help="the training questions' sets (default: both; one set trains one retriever per dataset, as the paper)",
    )
    parser.add_argument("--seed", type=int, help="every stage's training seed (default: the demo's, 0)")
    parser.add_argument(
        "--evaluate-stage1", action="store_true", help="also evaluate the stage-1 retriever in the hybrid pipeline"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/online_steps.json"))
    ours = parser.parse_args()
    if ours.online_steps < 1 or ours.eval_every < 1:
        parser.error("--online-steps and --eval-every must be at least 1")
    if ours.online_learning_rate is not None and ours.online_learning_rate <= 0:
        parser.error(f"--online-learning-rate must be above 0, got {ours.online_learning_rate}")
    check_reuse_generations(parser, ours.reuse_generations)
    if ours.compare and not (ours.compare / "r3_hybrid@hybrid").is_dir():
        parser.error(
            f"--compare {ours.compare}: no r3_hybrid@hybrid folder in it; give an earlier demo run's predictions folder"
        )
    if ours.online_retrieval_top_k is not None:
        top_m = demo.PRESETS["cpu-long"]["rerank_top_m"]
        demo.check_retrieval_top_k(parser, ours.online_retrieval_top_k, top_m, "--online-retrieval-top-k", remedy=None)
    passed = {flag: getattr(ours, flag) for flag in demo.LABELLING_FLAGS}
    passed["retrieval_top_k"] = ours.online_retrieval_top_k  # only the on-policy stage uses it
    passed |= {"offline_steps": ours.offline_steps, "train_sets": ours.train_sets, "seed": ours.seed}
    args = demo.parse_args(
        ["--preset", "cpu-long", "--eval-samples", str(ours.eval_samples), "--output-dir", ours.output_dir]
        + [
            arg
            for flag, value in passed.items()
            if value is not None
            for arg in (f"--{flag}", *map(str, value if isinstance(value, list) else [value]))
        ]
    )
    enable_logging()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    model, index, train, tests = demo.load_run(args)
    reward = demo.build_reward(args)
    choose = demo.fusion_chooser(args, index, reward.reader)
    caches = {name: {} for name in tests}
    checked = 0
    if ours.reuse_generations:
        caches = seeded_generations(ours.reuse_generations, tests, index)
        checked = check_reused(reward.reader, caches, tests, index, ours.check_reused)
    evaluators = {
        name: evaluator
        for (name, _), evaluator in demo.rag_evaluators(
            tests, index, reward.reader, args.rerank_top_m, caches, pipelines=("hybrid",)
        ).items()
    }
    predictions: dict[str, dict[str, list[dict]]] = {name: {} for name in tests}
    fusions, seconds = {}, {}

    def evaluate(label: str, retriever) -> None:
        began = time.time()
        fusions[label], by_set = demo.predict_with_own_fusion(retriever, choose, evaluators)
        for name, records in by_set.items():
            predictions[name][label] = records
            evaluators[name].save_predictions(
                records, out / "predictions" / label.replace(" @ ", "@").replace(" ", "_")
            )
            logger.info(f"{label} on {name}: {evaluators[name].compute_metrics(records)} ({time.time() - start:.0f}s)")
        seconds[f"evaluation: {label}"] = time.time() - began

    evaluate("initial @ hybrid", model)
    fusion = fusions["initial @ hybrid"]
    hybrid = {"first_stage": "hybrid", "fusion": fusion["fusion"], "fusion_weight": fusion["fusion_weight"]}
    demo.resolve_bm25_residual(args, fusion)

    began = time.time()
    subset, calibration = demo.calibrate(model, index, train, reward, args, out, hybrid)
    seconds["calibration"] = time.time() - began
    stage1_train = demo.stage1_questions(train, subset, reward.calibration, args.stage1_questions)
    offline_steps = demo.steps(args.offline_epochs, args.offline_steps, len(stage1_train), args.batch_size)
    began = time.time()
    model, stage1_history = demo.train_stage(model, reward, index, stage1_train, args, out, "stage1", offline_steps)
    seconds["training: stage1"] = time.time() - began
    if ours.evaluate_stage1:
        evaluate("stage1 @ hybrid", model)
    online_train = demo.unseen_questions(train, subset, offline_steps * args.batch_size, args.stage1_questions)
    began = time.time()
    checkpoints = dict(save_strategy="steps", save_steps=ours.eval_every, save_only_model=True)
    online_args = argparse.Namespace(**vars(args))
    if ours.online_learning_rate is not None:
        online_args.learning_rate = ours.online_learning_rate
    _, history = demo.train_stage(
        SIDRModel.from_pretrained(out / "stage1"),
        reward,
        index,
        online_train,
        online_args,
        out,
        "r3_hybrid_long",
        ours.online_steps,
        **hybrid,
        **checkpoints,
    )
    seconds["training: r3_hybrid_long"] = time.time() - began
    steps = sorted({*range(ours.eval_every, ours.online_steps + 1, ours.eval_every), ours.online_steps})
    for step in steps:
        folder = out / "r3_hybrid_long" / f"checkpoint-{step}"
        evaluate(f"r3_hybrid step {step} @ hybrid", SIDRModel.from_pretrained(folder))

    if ours.compare:
        for name, ds in tests.items():
            earlier = read_jsonl(ours.compare / "r3_hybrid@hybrid" / f"{name}_predictions.jsonl")
            wanted = set(ds["id"])
            predictions[name]["r3_hybrid (earlier run) @ hybrid"] = [r for r in earlier if r["id"] in wanted]

    results = {}
    for name, by_label in predictions.items():
        evaluator = evaluators[name]
        metrics = {
            label: {k.removeprefix(f"{name}_"): v for k, v in evaluator.compute_metrics(records).items()}
            for label, records in by_label.items()
        }
        pairs = {
            f"{label} - initial @ hybrid": {
                m: compare_predictions(records, by_label["initial @ hybrid"], m) for m in ("correct@1", "recall@1")
            }
            for label, records in by_label.items()
            if label != "initial @ hybrid"
        }
        results[name] = {"metrics": metrics, "paired_differences": pairs}

    print()
    demo.print_tables(results)
    keys = ("step", "loss", "reward", "reward/top1", "frac_online_positive")
    log = [{k: h[k] for k in keys if k in h} for h in history if "reward" in h]
    write_result(
        ours.out,
        {
            "results": results,
            "hybrid_pipeline": hybrid,
            "evaluation_fusion": fusions,
            "calibration": calibration,
            "online_training": {
                "steps": ours.online_steps,
                "questions": ours.online_steps * args.batch_size,
                "learning_rate": online_args.learning_rate,
                "retrieval_top_k": online_args.retrieval_top_k,
                "positive_fallback": online_args.positive_fallback,
            },
            "online_log": log,
            "reused_generations": {name: len(c) for name, c in caches.items()} | {"checked": checked},
            "demo_args": vars(args),
            "bench_args": {k: str(v) for k, v in vars(ours).items()},
            "seconds": seconds | {"total": time.time() - start},
        },
    )
    stages = {"stage 1 (offline)": stage1_history, f"stage 2, on-policy, hybrid ({ours.online_steps} steps)": history}
    demo.plot(stages, results, ours.out.with_suffix(".png"))
    print(f"\nWrote {ours.out} and {ours.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
