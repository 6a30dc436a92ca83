"""The offline demo: R3 end to end on the vendored QA data, no internet, no GPU needed.

The paper's protocol at CPU scale. A SIDR retriever starts from the packaged all-MiniLM-L6-v2; the index covers the
9.5k-passage corpus (bag of tokens, plus a bm25s part); the packaged SmolLM2-135M-Instruct is the reader and the
reward LLM. Two pipelines hand passages to the reader:

- `bag_of_tokens` (the paper's): the top m by E(q)·T(d), re-ranked by E(q)·E(d);
- `hybrid`: the union of the bag-of-tokens and bm25s top-m lists, re-ranked by E(q)·E(d) fused with bm25s's ranking,
  the fusion chosen on nq_dev + squad_dev questions (never on a test set): with the initial retriever for
  `r3_hybrid`'s training, and for each retriever's evaluation with that retriever. It is chosen by answer recall@1,
  or with `--fusion-selection rag_accuracy` by what the reader answers on those questions.

The training questions are nq_train's and squad_train's together (one retriever for both test sets); with
`--train-sets nq` one set's alone, as the paper trains one retriever per dataset.

1. Offline labels: the initial retriever's top passages for some training questions (in the paper's pipeline, or
   with `--calibration-first-stage hybrid` in the hybrid one), labelled by real greedy generation (the calibration
   pools), which also fix the reward threshold.
2. Stage 1, offline: reinforced contrastive learning on the calibration pools and the gold passages, with
   bag-of-tokens hard negatives (the paper's first 40 epochs; `--stage1-first-stage bm25` mines them from bm25s).
3. Stage 2, on-policy R3, twice from the stage-1 weights: `r3` retrieves in the paper's pipeline, `r3_hybrid` in the
   hybrid one, so that its reward scores the passages the deployed pipeline would hand the LLM. Both share one
   reward-score store.

Then bm25s and every retriever in both pipelines answer the same nq_test and squad_test questions: RAG accuracy@1,
answer recall@k, and for the pairs that matter the paired bootstrap 95% interval of the difference. Writes
`results.json`, the per-question results and a plot, and saves the trained retrievers. A stage whose saved retriever
in `--output-dir` was trained with the same settings is loaded instead of trained again, so a later run with more
test questions reuses the training of an earlier one; the offline labels written there are read back, so a later run
with more `--calibration-samples` labels only the questions it adds.

    python recipes/demo.py                    # 40 + 40 test questions, about 30 min on 2 CPU cores
    python recipes/demo.py --preset cpu-long  # all 500 nq_test questions and 500 squad_test ones (about 2 hours)
    python recipes/demo.py --preset gpu       # the settings a CPU cannot afford (one GPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext as _nothing
from pathlib import Path

import datasets
import torch

from r3hf import (
    AnswerProbabilityReward,
    Calibration,
    GenerationReward,
    R3Trainer,
    RAGEvaluator,
    SIDRModel,
    SparseEmbeddingIndex,
    compare_predictions,
)
from r3hf.data import load_qa_dataset
from r3hf.evaluation import SELECTED_FUSIONS, select_fusion, select_fusion_by_reader
from r3hf.models import resolve_model_path
from r3hf.r3_config import POSITIVE_FALLBACKS
from r3hf.retrieval import FIRST_STAGES, FUSIONS, cached_passage_embeddings
from r3hf.scripts.utils import (
    DATA,
    DEMO_READER,
    DEMO_RETRIEVER,
    cpu_config,
    demo_index,
    demo_retriever,
    matmul_gflops,
    write_result,
)
from r3hf.utils import ArgumentParser, DistinctValues, atomic_path, enable_logging

logger = logging.getLogger("r3hf.demo")


def plot_differences(ax, results: dict) -> None:
    """Draw every test set's paired differences in RAG accuracy@1, with their intervals, on the axes `ax`."""
    labels, y = [], 0
    for test_set, result in results.items():
        for pair, d in result["paired_differences"].items():
            acc = d["correct@1"]
            diff, low, high = (100 * acc[k] for k in ("difference", "low", "high"))
            ax.errorbar(diff, y, xerr=[[diff - low], [high - diff]], fmt="o", capsize=3)
            labels.append(f"{test_set}: {pair}")
            y += 1
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("RAG accuracy@1 difference (points, paired 95% CI)")


def plot(stages: dict[str, list[dict]], results: dict, path: Path) -> None:
    """Loss and rewarded share of the top-1 over training (both on-policy stages start where stage 1 ends), and the
    paired differences in RAG accuracy@1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_acc) = plt.subplots(1, 2, figsize=(14, 5.5), gridspec_kw={"width_ratios": [1, 1.15]})
    twin, offset = None, 0
    for number, (stage, history) in enumerate(stages.items()):
        steps_ = [e for e in history if "loss" in e]
        x = [offset + e["step"] for e in steps_]
        losses = [e["loss"] for e in steps_]
        (line,) = ax_train.plot(x, losses, alpha=0.25)
        smooth = [sum(losses[max(0, i - 9) : i + 1]) / len(losses[max(0, i - 9) : i + 1]) for i in range(len(losses))]
        ax_train.plot(x, smooth, color=line.get_color(), label=f"loss, {stage} (10-step mean)")
        if any("reward/top1" in e for e in steps_):
            twin = twin or ax_train.twinx()
            twin.plot(
                x,
                [e["reward/top1"] for e in steps_],
                ".--",
                color=line.get_color(),
                alpha=0.8,
                label=f"rewarded share of top-1, {stage}",
            )
        if number == 0:
            offset = x[-1] if x else 0  # the on-policy stages both start from stage 1's weights
    if twin is not None:
        twin.set_ylim(0, 1)
        twin.set_ylabel("rewarded share of the top-1 (on-policy)")
        twin.legend(loc="upper right", fontsize=7)
    ax_train.set_xlabel("training step (stage 1, then each stage 2 from its end)")
    ax_train.set_ylabel("RCL loss (log scale)")
    ax_train.set_yscale("log")
    ax_train.legend(loc="lower left", fontsize=7)
    plot_differences(ax_acc, results)
    fig.suptitle("R3: all-MiniLM-L6-v2 retriever, SmolLM2-135M-Instruct reader; retriever @ pipeline")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


PIPELINES = ("bag_of_tokens", "hybrid")
TRAIN_SETS = ("nq", "squad")  # the vendored training splits, data/<name>_train.jsonl.gz
# Each preset's defaults; flags given on the command line override them.
# README command 1: 29.8 min on 2 CPU cores where a float32 matrix product ran at 55-57 GFLOP/s, the slowest speed
# seen on the 2-core VM (target: 35); nearly all of it is the reader's and the retriever's forward passes.
CPU = dict(
    eval_samples=40,
    dev_samples=15,
    calibration_samples=10,
    calibration_top_k=3,
    offline_steps=30,
    online_steps=3,
    offline_epochs=None,
    online_epochs=None,
    batch_size=12,
    rerank_top_m=10,
    retrieval_top_k=3,
    reader_batch_size=4,
    generation_batch_size=20,
    evaluate_stage1=False,
    full_parametric=False,
    use_cpu=True,
)
PRESETS = {
    "cpu": CPU,
    # The 500 + 500-question run of the README and docs/benchmarks/demo.md: more dev, calibration and training, at the
    # batch sizes it was measured with, so that it repeats.
    "cpu-long": CPU
    | dict(
        eval_samples=500,
        dev_samples=100,
        calibration_samples=32,
        offline_steps=60,
        online_steps=8,
        calibration_top_k=4,
        retrieval_top_k=4,
        batch_size=16,
        reader_batch_size=10,
        generation_batch_size=10,
    ),
    # Sized by estimate for about 8 minutes on one H200-class GPU (never run here: no GPU was at hand).
    "gpu": dict(
        eval_samples=0,
        dev_samples=200,
        calibration_samples=1000,
        calibration_top_k=20,
        offline_steps=None,
        online_steps=None,
        offline_epochs=2.0,
        online_epochs=1.0,
        batch_size=64,
        rerank_top_m=100,
        retrieval_top_k=20,
        reader_batch_size=64,
        evaluate_stage1=True,
        full_parametric=True,
        use_cpu=False,
    ),
}
# (a, b) pairs reported with paired intervals: the questions first.
PAIRS = (
    ("r3_hybrid @ hybrid", "bm25s"),
    ("r3_hybrid @ hybrid", "initial @ hybrid"),
    ("r3 @ bag_of_tokens", "initial @ bag_of_tokens"),
    ("r3_hybrid @ hybrid", "r3 @ hybrid"),
    ("r3_hybrid @ bag_of_tokens", "r3 @ bag_of_tokens"),
    ("r3 @ hybrid", "initial @ hybrid"),
    ("initial @ hybrid", "bm25s"),
    ("r3 @ bag_of_tokens", "bm25s"),
    ("r3 @ bag_of_tokens", "stage1 @ bag_of_tokens"),
    ("stage1 @ bag_of_tokens", "initial @ bag_of_tokens"),
)


def reader_conversion(records: list[dict]) -> dict[str, float]:
    """How often the reader answers correctly when the top passage contains a gold answer, and when it does not: the
    ceiling that the reader puts on what a better retriever can buy."""
    hit = [r["correct@1"] for r in records if r["first_answer_rank"] == 0]
    miss = [r["correct@1"] for r in records if r["first_answer_rank"] != 0]
    return {
        "reader_accuracy_when_top1_has_answer": sum(hit) / len(hit) if hit else float("nan"),
        "reader_accuracy_when_top1_lacks_answer": sum(miss) / len(miss) if miss else float("nan"),
    }


def training_questions(data: Path, calibration_samples: int = 0, sets: Sequence[str] = TRAIN_SETS) -> datasets.Dataset:
    """The training questions of `sets` (nq_train and squad_train by default), shuffled together; refuses a
    calibration of more questions than they hold, before anything slow runs."""
    columns = ["id", "question", "answers", "positive_ids"]
    files = [data / f"{n}_train.jsonl.gz" for n in sets]
    train = datasets.concatenate_datasets(
        [load_qa_dataset(str(file)).select_columns(columns) for file in files]
    ).shuffle(seed=0)
    if calibration_samples > len(train):
        raise ValueError(
            f"--calibration-samples {calibration_samples} asks for more training questions than the {len(train)} in "
            f"{' and '.join(map(str, files))}: pass at most {len(train)}"
        )
    return train


def question_sets(data: Path, split: str, n: int) -> dict[str, datasets.Dataset]:
    """The first `n` shuffled questions (0: all) of nq's and squad's `split`, by name (`"nq_test"`, ...)."""
    sets = {
        f"{k}_{split}": load_qa_dataset(str(data / f"{k}_{split}.jsonl.gz")).shuffle(seed=0) for k in ("nq", "squad")
    }
    return {k: v.select(range(min(n, len(v)))) if n else v for k, v in sets.items()}


def load_run(args: argparse.Namespace):
    """What every run of the demo (and the benches built on it) starts from: the initial retriever, the index with its
    bm25s part, the training questions and the test sets.

    Returns:
        `(model, index, train, tests)`.
    """
    data = Path(args.data)
    model = demo_retriever(args.retriever)
    index = demo_index(model, data, bm25=True)
    return (
        model,
        index,
        training_questions(data, args.calibration_samples, args.train_sets),
        question_sets(data, "test", args.eval_samples),
    )


def rag_evaluators(
    tests: dict[str, datasets.Dataset],
    index,
    reader,
    rerank_top_m: int,
    generation_caches: dict[str, dict],
    pipelines: Sequence[str] = PIPELINES,
) -> dict[tuple[str, str], RAGEvaluator]:
    """One [`RAGEvaluator`] per test set and pipeline, keyed `(set name, pipeline)`; the pipelines of a set share
    its generation cache, so a (question, passage) pair that two retrievers rank first is generated once."""
    return {
        (name, pipeline): RAGEvaluator.from_dataset(
            ds,
            index,
            reader=reader,
            recall_at=[1, 5],
            rerank_top_m=rerank_top_m,
            name=name,
            generation_cache=generation_caches[name],
            first_stage=pipeline,
        )
        for name, ds in tests.items()
        for pipeline in pipelines
    }


FUSION_SELECTIONS = ("answer_recall", "rag_accuracy")


def fusion_chooser(args, index, reader) -> Callable[[object], dict]:
    """How a retriever's final ranking in the hybrid pipeline is chosen on the dev questions of both sets pooled,
    never on a test set: by answer recall@1 ([`select_fusion`], no reader), or with `--fusion-selection rag_accuracy`
    by what the reader answers ([`select_fusion_by_reader`]; one generation cache serves every retriever)."""
    devs = question_sets(Path(args.data), "dev", args.dev_samples)
    dev_questions = [q for d in devs.values() for q in d["question"]]
    dev_answers = [a for d in devs.values() for a in d["answers"]]
    if args.fusion_selection == "answer_recall":
        return lambda retriever: select_fusion(
            retriever, index, dev_questions, dev_answers, args.rerank_top_m, fusions=args.fusions
        )
    dev = RAGEvaluator(
        dev_questions,
        dev_answers,
        index,
        reader=reader,
        recall_at=[1],
        rerank_top_m=args.rerank_top_m,
        first_stage="hybrid",
        name="dev",
    )
    return lambda retriever: select_fusion_by_reader(retriever, dev, fusions=args.fusions)


def fit_hybrid_fusion(retriever, choose: Callable[[object], dict], evaluators) -> dict:
    """Choose `retriever`'s final ranking in the hybrid pipeline with `choose` ([`fusion_chooser`]) and set it on
    every hybrid one of `evaluators`.

    Returns:
        What `choose` returns.
    """
    fusion = choose(retriever)
    for evaluator in evaluators:
        if evaluator.first_stage == "hybrid":
            evaluator.fusion, evaluator.fusion_weight = fusion["fusion"], fusion["fusion_weight"]
    return fusion


def predict_with_own_fusion(retriever, choose: Callable[[object], dict], evaluators: dict):
    """Every evaluator's predictions for `retriever`, the hybrid ones with its own dev-chosen fusion
    ([`fit_hybrid_fusion`]); each passage is embedded once for all of them.

    Returns:
        `(fusion, {key: records})`, keyed as `evaluators`.
    """
    with cached_passage_embeddings(retriever):
        fusion = fit_hybrid_fusion(retriever, choose, evaluators.values())
        return fusion, {key: evaluator.predict(retriever) for key, evaluator in evaluators.items()}


def build_reward(args) -> AnswerProbabilityReward:
    """The reward LLM (also the reader): the paper's answer-probability proxy, or with `--reward generation` the
    reader's own greedy answer checked against the gold ones."""
    cls = GenerationReward if args.reward == "generation" else AnswerProbabilityReward
    return cls(
        resolve_model_path(args.reader),
        batch_size=args.reader_batch_size,
        generation_batch_size=args.generation_batch_size,
        max_new_tokens=args.max_new_tokens,
    )


def calibrate(model, index, train, reward, args, out: Path, hybrid: dict) -> tuple[datasets.Dataset, dict]:
    """The offline labels: the initial retriever's top-k for the first `args.calibration_samples` training questions,
    labelled by real greedy generation; they also set the reward's global threshold. The candidates come from the
    paper's pipeline, or with `args.calibration_first_stage == "hybrid"` from the `hybrid` one (`first_stage`,
    `fusion`, `fusion_weight`). Labels that an earlier run wrote to `out` with the same reader (name and weights, by
    [`Reader.fingerprint`]) and generation length are read back for every (question, passage) pair it labelled, so
    only the other pairs are generated: a run with more `--calibration-samples` labels only the questions it adds.
    Returns the calibrated questions and a summary of the labels: the number of questions, pairs and positives, the
    global threshold, and for each k up to the top-k the share of questions answered correctly from at least one of
    their first k passages (what a perfect re-ranker of them would reach)."""
    subset = train.select(range(args.calibration_samples))
    k = args.calibration_top_k
    pipeline = hybrid if args.calibration_first_stage == "hybrid" else {}
    candidates = index.get_passages(
        model.retrieve(subset["question"], index, k=k, rerank_top_m=max(k, args.rerank_top_m), **pipeline).rows
    )
    path, settings_path = out / "calibration.jsonl", out / "calibration_settings.json"
    settings = {
        "reader": args.reader,
        "reader_weights": reward.reader.fingerprint,
        "max_new_tokens": args.max_new_tokens,
    }
    pairs = [(q, str(p["id"])) for q, ps in zip(subset["question"], candidates) for p in ps]
    same_settings = path.exists() and settings_path.exists() and json.loads(settings_path.read_text()) == settings
    stored = {(r["query"], r["passage_id"]): r for r in Calibration.load(path).records} if same_settings else {}
    unlabelled = [[p for p in ps if (q, str(p["id"])) not in stored] for q, ps in zip(subset["question"], candidates)]
    todo = [i for i, ps in enumerate(unlabelled) if ps]
    if stored:
        read_back = len(pairs) - sum(len(ps) for ps in unlabelled)
        logger.info(f"Calibration: {read_back} pairs' labels read back from an earlier run ({path})")
    known = dict(stored)
    if todo:
        rows = subset.select(todo)
        labelled = reward.label_by_generation(rows["question"], rows["answers"], [unlabelled[i] for i in todo])
        known |= {(r["query"], r["passage_id"]): r for r in labelled}
    reward.calibration = calibration = Calibration.from_records([known[pair] for pair in pairs])
    if list(stored) != pairs:  # the file holds exactly this run's pairs, in its candidates' order
        calibration.save(path)
        with atomic_path(settings_path) as tmp:
            tmp.write_text(json.dumps(settings))
    labels = calibration.records["label"]
    if any(labels):
        reward.threshold = calibration.global_threshold()
    else:
        logger.warning(f"No calibrated pair was answered correctly: the reward keeps its threshold {reward.threshold}")
    summary = {
        "questions": len(subset),
        "top_k": k,
        "first_stage": args.calibration_first_stage,
        "pairs": len(labels),
        "positives": sum(labels),
        "threshold": reward.threshold,
        "answered_within": {j: calibration.answered_within(j) for j in range(1, k + 1)},
    }
    return subset, summary


STAGE1_QUESTIONS = ("all", "calibrated", "pooled")


def stage1_questions(train: datasets.Dataset, subset: datasets.Dataset, calibration: Calibration, which: str):
    """Stage 1's training questions: `"all"` of them (the calibrated ones train on their pools, the rest on their
    gold passages and mined negatives), only the `"calibrated"` ones, or, as the paper, only the `"pooled"` ones: those
    the reader answered correctly from at least one of their candidates and wrongly from another (a question with an
    empty pool is discarded)."""
    if which == "all":
        return train
    if which == "calibrated":
        return subset
    pooled = set(calibration.thresholds)
    kept = subset.filter(lambda row: row["question"] in pooled)
    if len(kept) == 0:
        raise ValueError(
            "--stage1-questions pooled: no calibrated question has both a correct and a wrong answer among its "
            "candidates; calibrate more questions (--calibration-samples) or passages (--calibration-top-k)"
        )
    return kept


def unseen_questions(
    train: datasets.Dataset, subset: datasets.Dataset, seen: int, stage1: str = "all"
) -> datasets.Dataset:
    """Stage 2's questions: the calibrated ones (whose pools serve as fallbacks), then those after the first `seen`;
    every training question when stage 1 trained on calibrated ones alone (`stage1`, as [`stage1_questions`]). Stage
    1's trainer draws its `seen` questions at random from all of them, so the cut does not keep out the ones it saw."""
    if stage1 != "all" or seen >= len(train):
        return train
    return datasets.concatenate_datasets([subset, train.select(range(seen, len(train)))])


def steps(epochs: float | None, fixed: int | None, questions: int, batch_size: int) -> int:
    return math.ceil(epochs * questions / batch_size) if epochs is not None else int(fixed)


def train_stage(
    model, reward, index, train, args, out: Path, name: str, max_steps: int, **pipeline
) -> tuple[SIDRModel, list[dict]]:
    """Train one stage and save it to `out/name`: offline without `pipeline`, on-policy in the given pipeline
    (`first_stage`, `fusion`, `fusion_weight`) with it. A retriever saved there by an earlier run with the same
    settings (the reader's weights among them, by [`Reader.fingerprint`]) is loaded instead. Returns the retriever
    and the stage's log history."""
    online = bool(pipeline)
    # Stage 1 feeds both pipelines; an on-policy stage in the paper's has no bm25s ranking to fuse with.
    residual = args.bm25_residual_weight if not online or pipeline["first_stage"] != "bag_of_tokens" else 0.0
    settings = dict(
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=max_steps,
        temperature=args.temperature,
        rerank_top_m=args.rerank_top_m,
        retrieval_top_k=args.retrieval_top_k,
        positive_fallback=args.positive_fallback if online else "offline",  # stage 1 never uses it
        seed=args.seed,
        warmup_steps=0.1,
        **(pipeline or {"first_stage": args.stage1_first_stage}),  # offline, it is where hard negatives are mined
        **({"bm25_residual_weight": residual} if residual else {}),
    )
    record = {
        "stage": name,
        "online": online,
        "settings": settings,
        "train_questions": len(train),
        "train_sets": list(args.train_sets),
        **({} if online else {"stage1_questions": args.stage1_questions}),
        "calibration": {
            "samples": args.calibration_samples,
            "top_k": args.calibration_top_k,
            "first_stage": args.calibration_first_stage,
        },
        "reader": args.reader,
        "reader_weights": reward.reader.fingerprint,
        "max_new_tokens": args.max_new_tokens,
        **({"reward": args.reward} if online else {}),
    }
    folder = out / name
    done = folder / "demo_stage.json"
    if done.exists() and json.loads(done.read_text())["record"] == record:
        logger.info(f"{name}: loading the retriever trained by an earlier run with the same settings ({folder})")
        return SIDRModel.from_pretrained(folder), json.loads(done.read_text())["log_history"]
    config = cpu_config(
        folder, offline_only=not online, reward_cache_dir=str(out / "reward_cache"), use_cpu=args.use_cpu, **settings
    )
    trainer = R3Trainer(model, reward, config, train, index=index)
    trainer.train()
    trainer.create_model_card(
        model_name=f"r3hf-demo-{name}", dataset_name=" + ".join(f"{n}_train" for n in args.train_sets) + " (vendored)"
    )
    trainer.save_model(config.output_dir)
    history = trainer.state.log_history
    (folder / "demo_stage.json").write_text(json.dumps({"record": record, "log_history": history}))
    return trainer.model, history


def print_tables(results: dict) -> None:
    """Print each test set's metrics and paired differences as Markdown tables."""
    print("| test set | retriever @ pipeline | RAG accuracy@1 | answer recall@1 | @5 |")
    print("|---|---|---|---|---|")
    for name, result in results.items():
        for label, m in result["metrics"].items():
            print(
                f"| {name} | {label} | {100 * m['rag_accuracy@1']:.1f} | {100 * m['answer_recall@1']:.1f} | "
                f"{100 * m['answer_recall@5']:.1f} |"
            )
    print("\n| test set | difference | RAG accuracy@1 (points, 95% CI) | answer recall@1 (points, 95% CI) |")
    print("|---|---|---|---|")
    for name, result in results.items():
        for pair, d in result["paired_differences"].items():
            acc, rec = d["correct@1"], d["recall@1"]
            print(
                f"| {name} | {pair} | {100 * acc['difference']:+.1f} [{100 * acc['low']:+.1f}, {100 * acc['high']:+.1f}] "
                f"| {100 * rec['difference']:+.1f} [{100 * rec['low']:+.1f}, {100 * rec['high']:+.1f}] |"
            )


# The flags that benchmarks/bench_online_steps.py takes too and hands on to `parse_args`.
LABELLING_FLAGS = (
    "calibration_samples",
    "calibration_top_k",
    "calibration_first_stage",
    "stage1_questions",
    "stage1_first_stage",
    "fusion_selection",
    "fusions",
    "reward",
    "positive_fallback",
    "bm25_residual_weight",
)


def residual_weight_flag(text: str) -> str | float:
    """`--bm25-residual-weight`: `"fusion"`, or a finite number at least 0."""
    if text == "fusion":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:  # NaN included
        raise argparse.ArgumentTypeError(f"expected 'fusion' or a finite number at least 0, got {text!r}")
    return value


def resolve_bm25_residual(args: argparse.Namespace, fusion: dict) -> float:
    """Set `args.bm25_residual_weight` to a number: `"fusion"` takes bm25s's weight relative to the dense score's in
    the initial retriever's dev-chosen hybrid `fusion` ((1 - w) / w for a weighted fusion of dense weight w, 1 for
    reciprocal rank, 0 for E(q)·E(d) alone; a score fusion's weight as a weighted one's). Returns it."""
    if args.bm25_residual_weight == "fusion":
        kind, w = fusion["fusion"], fusion["fusion_weight"]
        args.bm25_residual_weight = (1 - w) / w if kind in ("weighted", "score") else 1.0 if kind == "rrf" else 0.0
        logger.info(
            f"bm25s's weight in the training loss, from the hybrid fusion {kind}: {args.bm25_residual_weight:.3g}"
        )
    return args.bm25_residual_weight


def add_labelling_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of what labels the training pairs (the calibration's pools and the on-policy reward) and of what
    the loss ranks them by."""
    parser.add_argument("--calibration-samples", type=int, help="training questions labelled by generation")
    parser.add_argument("--calibration-top-k", type=int, help="passages per calibrated question")
    parser.add_argument(
        "--calibration-first-stage",
        choices=PIPELINES,
        default="bag_of_tokens",
        help="the pipeline whose top passages the initial retriever hands the calibration (hybrid: its dev fusion)",
    )
    parser.add_argument(
        "--reward",
        choices=["answer_probability", "generation"],
        default="answer_probability",
        help="on-policy reward: P(gold answer) thresholded (the paper's proxy) or the reader's own greedy answer",
    )
    parser.add_argument(
        "--stage1-questions",
        choices=STAGE1_QUESTIONS,
        default="all",
        help="stage 1 trains on all training questions, the calibrated ones, or (the paper) those with both pools",
    )
    parser.add_argument(
        "--stage1-first-stage",
        choices=FIRST_STAGES,
        default="bag_of_tokens",
        help="the first stage whose best passage without a gold answer is stage 1's hard negative, where a question "
        "has no offline one (bm25: bm25s's own mistakes, which the hybrid fusion inherits)",
    )
    parser.add_argument(
        "--fusion-selection",
        choices=FUSION_SELECTIONS,
        default="answer_recall",
        help="how each retriever's hybrid fusion is chosen on the dev questions: by answer recall@1, or by the "
        "reader's RAG accuracy@1 (its answers on up to 11 passages per dev question)",
    )
    parser.add_argument(
        "--fusions",
        nargs="+",
        choices=FUSIONS,
        default=list(SELECTED_FUSIONS),
        action=DistinctValues,
        help="the final rankings that choice compares (score: bm25s's scores, not its ranks, in a weighted sum)",
    )
    parser.add_argument(
        "--positive-fallback",
        choices=POSITIVE_FALLBACKS,
        default="offline",
        help="on-policy questions with no rewarded passage: train on an offline or gold positive, or skip them",
    )
    parser.add_argument(
        "--bm25-residual-weight",
        type=residual_weight_flag,
        default=0.0,
        help="stage 1 and the hybrid on-policy stage rank by E(q)·E(d) + this weight x bm25s's score in the loss, "
        "so the retriever learns what bm25s misses; 'fusion': bm25s's weight in the initial retriever's hybrid "
        "fusion; 0: the paper's loss",
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="defaults: cpu (about 30 min on 2 cores), cpu-long (500 + 500 questions) or gpu",
    )
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--data", default=str(DATA), help="folder of the QA data and corpus")
    parser.add_argument("--retriever", default=DEMO_RETRIEVER, help="the starting encoder (asset, path or Hub id)")
    parser.add_argument("--reader", default=DEMO_READER, help="reader and reward LLM")
    parser.add_argument("--eval-samples", type=int, help="questions per test set (0: all)")
    parser.add_argument("--dev-samples", type=int, help="dev questions per set that choose the hybrid fusion")
    parser.add_argument(
        "--train-sets",
        nargs="+",
        choices=TRAIN_SETS,
        default=list(TRAIN_SETS),
        action=DistinctValues,
        help="the training questions: both sets' (one retriever for both), or one set's (the paper: one per dataset)",
    )
    add_labelling_flags(parser)
    parser.add_argument("--offline-steps", type=int)
    parser.add_argument("--online-steps", type=int, help="steps of each on-policy stage")
    parser.add_argument("--offline-epochs", type=float, help="instead of --offline-steps")
    parser.add_argument("--online-epochs", type=float, help="instead of --online-steps")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--seed", type=int, default=0, help="every stage's training seed: the order it draws questions in, dropout"
    )
    parser.add_argument("--rerank-top-m", type=int, help="candidates per query from each first stage")
    parser.add_argument("--retrieval-top-k", type=int, help="passages scored by the reward per question")
    parser.add_argument("--reader-batch-size", type=int, help="sequences per forward pass of the reward's scoring")
    parser.add_argument("--generation-batch-size", type=int, help="sequences per batch of the reader's generation")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="reader's generation length (the paper: 100; 48 keeps most)"
    )
    parser.add_argument("--evaluate-stage1", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--full-parametric",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also evaluate each retriever on the full parametric index E(D) (embeds the whole corpus)",
    )
    args = parser.parse_args(argv)
    # Steps given on the command line replace a preset's epochs, and epochs its steps.
    for unit, other in (("steps", "epochs"), ("epochs", "steps")):
        for stage in ("offline", "online"):
            if getattr(args, f"{stage}_{unit}") is not None and getattr(args, f"{stage}_{other}") is None:
                setattr(args, f"{stage}_{other}", False)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    for stage in ("offline", "online"):
        for unit in ("steps", "epochs"):
            if getattr(args, f"{stage}_{unit}") is False:
                setattr(args, f"{stage}_{unit}", None)
    # Checked here, not only by R3Config and the calibration, so that a bad value fails before anything slow runs.
    check_retrieval_top_k(parser, args.retrieval_top_k, args.rerank_top_m)
    if not 0 <= args.seed < 2**32:  # numpy's seed range: set_seed would fail only once training starts
        parser.error(f"--seed must be from 0 to {2**32 - 1}, got {args.seed}")
    for flag in ("calibration_samples", "calibration_top_k"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    for stage in ("offline", "online"):
        fixed, epochs = getattr(args, f"{stage}_steps"), getattr(args, f"{stage}_epochs")
        if fixed is not None and fixed < 1:
            parser.error(f"--{stage}-steps must be at least 1, got {fixed}")
        if epochs is not None and epochs <= 0:
            parser.error(f"--{stage}-epochs must be above 0, got {epochs}")
    return args


def check_retrieval_top_k(
    parser: argparse.ArgumentParser,
    top_k: int,
    top_m: int,
    flag: str = "--retrieval-top-k",
    remedy: str | None = "raise --rerank-top-m",
) -> None:
    """A parser error unless the reward's `top_k` passages per on-policy question fit in the `top_m` candidates of
    each first stage; `remedy`, if any, is offered as the other fix (the demo's: raise `--rerank-top-m`)."""
    if not 1 <= top_k <= top_m:
        parser.error(
            f"{flag} {top_k}: the reward scores that many passages per on-policy question, but each first stage "
            f"gives {top_m} candidates; pick a top-k from 1 to {top_m}{f', or {remedy}' if remedy else ''}"
        )


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    enable_logging()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    speed_at_start = matmul_gflops()
    start = time.time()

    model, index, train, tests = load_run(args)
    reward = build_reward(args)
    logger.info(f"Set-up: {time.time() - start:.0f}s; {len(index)} passages, {len(train)} training questions")
    stage_seconds = {"set-up": time.time() - start}  # wall-clock seconds of each part of the run

    generations = {name: {} for name in tests}  # one generation cache per test set, shared by every pipeline
    evaluators = rag_evaluators(tests, index, reward.reader, args.rerank_top_m, generations)
    choose = fusion_chooser(args, index, reward.reader)
    predictions: dict[str, dict[str, list[dict]]] = {name: {} for name in tests}

    # Each retriever's own final ranking in the hybrid pipeline, chosen on the dev questions pooled over both sets.
    fusions = {}

    def evaluate(label: str, retriever, pipelines: Sequence[str] = PIPELINES) -> None:
        began = time.time()
        with cached_passage_embeddings(retriever) if hasattr(retriever, "encode_document") else _nothing():
            if "hybrid" in pipelines:
                fusions[label] = fit_hybrid_fusion(retriever, choose, evaluators.values())
                logger.info(f"{label}: hybrid fusion on dev {fusions[label]} ({time.time() - start:.0f}s)")
            for pipeline in pipelines:
                for name in tests:
                    evaluator = evaluators[(name, pipeline)]
                    full = label if label == "bm25s" else f"{label} @ {pipeline}"
                    predictions[name][full] = records = evaluator.predict(retriever)
                    evaluator.save_predictions(records, out / "predictions" / full.replace(" @ ", "@"))
                    logger.info(f"{full} on {name}: {evaluator.compute_metrics(records)} ({time.time() - start:.0f}s)")
        if args.full_parametric and hasattr(retriever, "encode_document"):
            parametric = SparseEmbeddingIndex.build(index.corpus, retriever, show_progress_bar=True)
            for name, ds in tests.items():
                evaluator = RAGEvaluator.from_dataset(
                    ds,
                    parametric,
                    reader=reward.reader,
                    recall_at=[1, 5],
                    name=name,
                    generation_cache=generations[name],
                )
                predictions[name][f"{label} @ full_parametric"] = evaluator.predict(retriever)
        stage_seconds[f"evaluation: {label}"] = time.time() - began

    evaluate("bm25s", index.bm25, pipelines=PIPELINES[:1])
    evaluate("initial", model)
    # The initial retriever's fusion is the hybrid pipeline that r3_hybrid trains in.
    fusion = fusions["initial"]
    hybrid = {"first_stage": "hybrid", "fusion": fusion["fusion"], "fusion_weight": fusion["fusion_weight"]}
    resolve_bm25_residual(args, fusion)
    began = time.time()
    subset, calibration = calibrate(model, index, train, reward, args, out, hybrid)
    stage_seconds["calibration"] = time.time() - began
    logger.info(
        f"Calibration: {calibration['positives']} of {calibration['pairs']} pairs answered correctly by generation; "
        f"global threshold {reward.threshold:.3g}; questions answered from one of their top {args.calibration_top_k}: "
        f"{calibration['answered_within'][args.calibration_top_k]:.1%} ({time.time() - start:.0f}s)"
    )
    stage1_train = stage1_questions(train, subset, reward.calibration, args.stage1_questions)
    offline_steps = steps(args.offline_epochs, args.offline_steps, len(stage1_train), args.batch_size)
    online_steps = steps(args.online_epochs, args.online_steps, len(train), args.batch_size)
    began = time.time()
    model, stage1_history = train_stage(model, reward, index, stage1_train, args, out, "stage1", offline_steps)
    stage_seconds["training: stage1"] = time.time() - began
    stages = {"stage 1 (offline)": stage1_history}
    if args.evaluate_stage1:
        evaluate("stage1", model)
    online_train = unseen_questions(train, subset, offline_steps * args.batch_size, args.stage1_questions)
    for name, pipeline in (("r3", {"first_stage": "bag_of_tokens"}), ("r3_hybrid", hybrid)):
        began = time.time()
        start_model = SIDRModel.from_pretrained(out / "stage1")
        trained, stages[f"stage 2, on-policy, {pipeline['first_stage']} pipeline ({name})"] = train_stage(
            start_model, reward, index, online_train, args, out, name, online_steps, **pipeline
        )
        stage_seconds[f"training: {name}"] = time.time() - began
        evaluate(name, trained)
    logger.info(f"Training and evaluation done at {time.time() - start:.0f}s")

    results = {}
    for name in tests:
        by_retriever = predictions[name]
        evaluator = evaluators[(name, PIPELINES[0])]
        metrics = {label: evaluator.compute_metrics(records) for label, records in by_retriever.items()}
        metrics = {label: {k.removeprefix(f"{name}_"): v for k, v in m.items()} for label, m in metrics.items()}
        for label, records in by_retriever.items():
            metrics[label].update(reader_conversion(records))
        pairs = {
            f"{a} - {b}": {
                m: compare_predictions(by_retriever[a], by_retriever[b], m) for m in ("correct@1", "recall@1")
            }
            for a, b in PAIRS
            if a in by_retriever and b in by_retriever
        }
        results[name] = {"metrics": metrics, "paired_differences": pairs}

    print(f"\n## Offline demo ({time.time() - start:.0f}s, {torch.get_num_threads()} threads)\n")
    print("Minutes per part: " + ", ".join(f"{part} {seconds / 60:.1f}" for part, seconds in stage_seconds.items()))
    speed_at_end = matmul_gflops()
    print(
        f"Most of it is matrix products: this machine ran a float32 one at {speed_at_start:.0f} GFLOP/s at the start "
        f"and {speed_at_end:.0f} at the end."
    )
    print(f"Hybrid pipeline in training: {hybrid}, chosen on {fusion['n']} dev questions.")
    chosen = {label: {k: f[k] for k in ("fusion", "fusion_weight")} for label, f in fusions.items()}
    print(f"Hybrid fusion of each retriever in evaluation, chosen on the same dev questions: {chosen}")
    k, within = calibration["top_k"], calibration["answered_within"]
    print(
        f"The reader answered {within[1]:.1%} of the {calibration['questions']} calibrated training questions from "
        f"the initial retriever's top passage, and {within[k]:.1%} from one of its top {k}: no re-ranking of those "
        "candidates can beat the latter.\n"
    )
    print_tables(results)
    summary = {
        "results": results,
        "training": stages,
        "threshold": reward.threshold,
        "calibration": calibration,
        "hybrid_pipeline": hybrid,
        "fusion_selection": fusion,
        "evaluation_fusion": fusions,
        "args": vars(args),
        "seconds": time.time() - start,
        "stage_seconds": stage_seconds,
        "matmul_gflops": {"start": speed_at_start, "end": speed_at_end},
    }
    write_result(out / "results.json", summary)
    plot(stages, results, out / "demo.png")
    print(f"\nWrote {out / 'results.json'}, {out / 'demo.png'}, per-question results in {out / 'predictions'}")
    return summary


if __name__ == "__main__":
    main()
