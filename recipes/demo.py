"""The offline CPU demo (README command 1): R3 end to end on the vendored QA data, no internet, no GPU.

The paper's protocol at CPU scale. A SIDR retriever starts from the packaged all-MiniLM-L6-v2; the bag-of-tokens index
covers the 9.5k-passage corpus; the packaged SmolLM2-135M-Instruct is the reader and the reward LLM.

1. Offline labels: the initial retriever's top passages for some training questions, labelled by real greedy
   generation (the calibration pools), which also fix the reward threshold.
2. Stage 1, offline: reinforced contrastive learning on the calibration pools and the gold passages, with
   bag-of-tokens hard negatives (the paper's first 40 epochs).
3. Stage 2, on-policy R3: retrieve with the current weights, reward with the LLM, learn from the rewarded passages.

Then the initial retriever, stage 1, stage 2 (R3) and bm25s answer the same nq_test and squad_test questions: RAG
accuracy@1, answer recall@k, and per pair of retrievers the paired bootstrap 95% interval of the difference. Writes
`results.json`, the per-question results and a plot, and saves both trained retrievers.

    python recipes/demo.py                       # about 31 minutes on 2 CPU cores
    python recipes/demo.py --eval-samples 500    # every nq_test question (about 61 minutes)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import datasets
import torch

from r3hf import (
    AnswerProbabilityReward,
    BagOfTokensIndex,
    BM25Retriever,
    R3Config,
    R3Trainer,
    RAGEvaluator,
    compare_predictions,
)
from r3hf.data import load_qa_dataset, load_retriever, load_table, resolve_model_path
from r3hf.utils import enable_logging

DATA = Path(__file__).resolve().parents[1] / "data"
logger = logging.getLogger("r3hf.demo")


def plot(stages: dict[str, list[dict]], results: dict, path: Path) -> None:
    """Loss and rewarded share of the top-1 over training, and the paired differences in RAG accuracy@1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5))
    offset = 0
    for stage, history in stages.items():
        steps = [e for e in history if "loss" in e]
        x = [offset + e["step"] for e in steps]
        losses = [e["loss"] for e in steps]
        ax_train.plot(x, losses, alpha=0.3)
        smooth = [sum(losses[max(0, i - 9) : i + 1]) / len(losses[max(0, i - 9) : i + 1]) for i in range(len(losses))]
        ax_train.plot(x, smooth, label=f"loss, {stage} (10-step mean)")
        if any("reward/top1" in e for e in steps):
            twin = ax_train.twinx()
            twin.plot(x, [e["reward/top1"] for e in steps], "g.-", alpha=0.6, label="rewarded share of top-1")
            twin.set_ylim(0, 1)
            twin.set_ylabel("rewarded share of the top-1 (on-policy)")
            twin.legend(loc="lower right", fontsize=8)
        offset = x[-1] if x else offset
    ax_train.set_xlabel("training step (stage 1, then stage 2)")
    ax_train.set_ylabel("RCL loss (log scale)")
    ax_train.set_yscale("log")
    ax_train.legend(loc="lower left", fontsize=8)
    labels, y = [], 0
    for test_set, result in results.items():
        for pair, d in result["paired_differences"].items():
            acc = d["correct@1"]
            diff, low, high = (100 * acc[k] for k in ("difference", "low", "high"))
            ax_acc.errorbar(diff, y, xerr=[[diff - low], [high - diff]], fmt="o", capsize=3)
            labels.append(f"{test_set}: {pair}")
            y += 1
    ax_acc.axvline(0, color="grey", lw=0.8)
    ax_acc.set_yticks(range(len(labels)), labels, fontsize=8)
    ax_acc.set_xlabel("difference in RAG accuracy@1 (points), paired bootstrap 95% CI")
    fig.suptitle("R3 on CPU: all-MiniLM-L6-v2 retriever, SmolLM2-135M-Instruct reader")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def reader_conversion(records: list[dict]) -> dict[str, float]:
    """How often the reader answers correctly when the top passage contains a gold answer, and when it does not: the
    ceiling that the reader puts on what a better retriever can buy."""
    hit = [r["correct@1"] for r in records if r["first_answer_rank"] == 0]
    miss = [r["correct@1"] for r in records if r["first_answer_rank"] != 0]
    return {
        "reader_accuracy_when_top1_has_answer": sum(hit) / len(hit) if hit else float("nan"),
        "reader_accuracy_when_top1_lacks_answer": sum(miss) / len(miss) if miss else float("nan"),
    }


def train_stage(model, reward, index, train, args, out: Path, name: str, online: bool) -> list[dict]:
    config = R3Config(
        output_dir=str(out / name),
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=args.online_steps if online else args.offline_steps,
        warmup_epochs_offline=0.0 if online else 1e9,
        temperature=args.temperature,
        retrieval_top_m=args.top_m,
        retrieval_top_k=args.top_k,
        positive_fallback="offline",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        warmup_steps=0.1,
    )
    trainer = R3Trainer(model, reward, config, train, index=index)
    trainer.train()
    trainer.create_model_card(model_name=f"r3hf-demo-{name}", dataset_name="nq_train + squad_train (vendored)")
    trainer.save_model(config.output_dir)
    return trainer.state.log_history


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--eval-samples", type=int, default=150, help="questions per test set")
    parser.add_argument("--calibration-samples", type=int, default=32, help="questions labelled by generation")
    parser.add_argument("--offline-steps", type=int, default=60)
    parser.add_argument("--online-steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-m", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="reader's generation length (the paper: 100; 48 keeps most)"
    )
    args = parser.parse_args()
    enable_logging()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    model = load_retriever("all-minilm-l6-v2", query_max_length=32, passage_max_length=128)
    index = BagOfTokensIndex.build(load_table(str(DATA / "corpus.jsonl.gz")), model.tokenizer, max_length=128)
    columns = ["id", "question", "answers", "positive_ids"]
    train = datasets.concatenate_datasets(
        [load_qa_dataset(str(DATA / f"{n}_train.jsonl.gz")).select_columns(columns) for n in ("nq", "squad")]
    ).shuffle(seed=0)
    tests = {f"{n}_test": load_qa_dataset(str(DATA / f"{n}_test.jsonl.gz")).shuffle(seed=0) for n in ("nq", "squad")}
    tests = {k: v.select(range(min(args.eval_samples, len(v)))) for k, v in tests.items()}
    reward = AnswerProbabilityReward(
        resolve_model_path("smollm2-135m-instruct"), batch_size=10, max_new_tokens=args.max_new_tokens
    )
    logger.info(f"Set-up: {time.time() - start:.0f}s; {len(index)} passages, {len(train)} training questions")

    # Offline labels: the initial retriever's top-k, labelled by real greedy generation.
    subset = train.select(range(args.calibration_samples))
    candidates = index.get_passages(
        model.retrieve(subset["question"], index, k=args.top_k, rerank_top_m=args.top_m).ids
    )
    calibration = reward.calibrate(
        subset["question"], subset["answers"], candidates, save_path=out / "calibration.jsonl"
    )
    reward.threshold = calibration.global_threshold()
    labels = calibration.records["label"]
    logger.info(
        f"Calibration: {sum(labels)} of {len(labels)} pairs answered correctly by generation; global threshold "
        f"{reward.threshold:.3g} ({time.time() - start:.0f}s)"
    )

    evaluators = {
        name: RAGEvaluator.from_dataset(ds, index, reader=reward, recall_at=[1, 5], rerank_top_m=args.top_m, name=name)
        for name, ds in tests.items()
    }
    predictions: dict[str, dict[str, list[dict]]] = {name: {} for name in tests}

    def evaluate(label: str, retriever) -> None:
        for name, evaluator in evaluators.items():
            predictions[name][label] = evaluator.predict(retriever)
            evaluator.save(predictions[name][label], {}, out / "predictions" / label)
            logger.info(f"{label} on {name}: {evaluator.compute_metrics(predictions[name][label])}")

    evaluate("bm25s", BM25Retriever(index))
    evaluate("initial", model)
    # Stage 2 starts on questions stage 1 has not seen (after the calibrated ones, whose pools serve as fallbacks).
    offline_questions = args.offline_steps * args.batch_size
    online_train = datasets.concatenate_datasets([subset, train.select(range(offline_questions, len(train)))])
    stages = {"stage 1 (offline)": train_stage(model, reward, index, train, args, out, "stage1", online=False)}
    evaluate("stage1", model)
    stages["stage 2 (on-policy R3)"] = train_stage(model, reward, index, online_train, args, out, "r3", online=True)
    evaluate("r3", model)
    logger.info(f"Training and evaluation done at {time.time() - start:.0f}s")

    results = {}
    for name, evaluator in evaluators.items():
        by_retriever = predictions[name]
        metrics = {label: evaluator.compute_metrics(records) for label, records in by_retriever.items()}
        metrics = {label: {k.removeprefix(f"{name}_"): v for k, v in m.items()} for label, m in metrics.items()}
        for label, records in by_retriever.items():
            metrics[label].update(reader_conversion(records))
        pairs = {
            f"{a} - {b}": {
                m: compare_predictions(by_retriever[a], by_retriever[b], m) for m in ("correct@1", "recall@1")
            }
            for a, b in itertools.permutations(by_retriever, 2)
            if (a, b)
            in {("r3", "initial"), ("stage1", "initial"), ("r3", "stage1"), ("r3", "bm25s"), ("stage1", "bm25s")}
        }
        results[name] = {"metrics": metrics, "paired_differences": pairs}

    print(f"\n## Offline demo ({time.time() - start:.0f}s, {torch.get_num_threads()} threads)\n")
    print("| test set | retriever | RAG accuracy@1 | answer recall@1 | @5 |")
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
    (out / "results.json").write_text(
        json.dumps(
            {
                "results": results,
                "training": stages,
                "threshold": reward.threshold,
                "calibration": {"pairs": len(labels), "positives": sum(labels)},
                "args": vars(args),
                "seconds": time.time() - start,
            },
            indent=1,
        )
    )
    plot(stages, results, out / "demo.png")
    print(f"\nWrote {out / 'results.json'}, {out / 'demo.png'}, per-question results in {out / 'predictions'}")


if __name__ == "__main__":
    main()
