"""The offline CPU demo (README command 1): R3 end to end on the vendored QA data, no internet, no GPU.

Starts a SIDR retriever from the packaged all-MiniLM-L6-v2, builds the bag-of-tokens index of the 9.5k-passage
corpus, rewards with the packaged SmolLM2-135M-Instruct, trains with R3, and compares the initial retriever, the
R3-trained one and bm25s on nq_test and squad_test: RAG accuracy (1 passage in context) and answer-recall@k. Prints
the table, writes it as JSON, and plots reward and dev accuracy over training.

    python recipes/demo.py                     # about 35 minutes on 2 CPU cores
    python recipes/demo.py --eval-samples 50   # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from r3hf import AnswerProbabilityReward, BagOfTokensIndex, R3Config, R3Trainer
from r3hf.data import load_qa_dataset, load_retriever, load_table, resolve_model_path
from r3hf.scripts.evaluate import BM25Retriever, evaluate_retriever

DATA = Path(__file__).resolve().parents[1] / "data"


def plot(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [e for e in log_history if "reward" in e]
    evals = [e for e in log_history if "eval_rag_accuracy" in e]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([e["step"] for e in train], [e["reward"] for e in train], label="mean reward of retrieved top-k (train)")
    ax.plot([e["step"] for e in train], [e["reward/top1"] for e in train], label="reward of top-1 (train)", alpha=0.6)
    ax.plot(
        [e["step"] for e in evals],
        [e["eval_rag_accuracy"] for e in evals],
        "o-",
        label="RAG accuracy, 1 passage (nq_dev)",
    )
    ax.set_xlabel("training step")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("R3 on CPU: all-MiniLM-L6-v2 retriever, SmolLM2-135M-Instruct reader")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--train-samples", type=int, default=256)
    parser.add_argument("--eval-samples", type=int, default=150, help="questions per test set")
    parser.add_argument("--dev-samples", type=int, default=30, help="nq_dev questions for accuracy during training")
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=32,
        help="training questions whose initial top-k passages are labelled by real generation",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="global reward threshold on P(answer); default: the one calibration finds",
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top-m", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=4)
    args = parser.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    model = load_retriever("all-minilm-l6-v2", query_max_length=32, passage_max_length=128)
    index = BagOfTokensIndex.build(load_table(str(DATA / "corpus.jsonl.gz")), model.tokenizer, max_length=128)
    train = load_qa_dataset(str(DATA / "nq_train.jsonl.gz")).shuffle(seed=0)
    train = train.select(range(min(args.train_samples, len(train))))
    dev = load_qa_dataset(str(DATA / "nq_dev.jsonl.gz"), max_rows=args.dev_samples)
    tests = {
        name: load_qa_dataset(str(DATA / f"{name}_test.jsonl.gz")).shuffle(seed=0).select(range(args.eval_samples))
        for name in ("nq", "squad")
    }
    reward = AnswerProbabilityReward(resolve_model_path("smollm2-135m-instruct"), batch_size=10)
    print(f"Set-up: {time.time() - start:.0f}s; {len(index)} passages, {len(train)} training questions", flush=True)

    # Offline stage: the initial retriever's top-k for some training questions, labelled by real greedy generation.
    # The calibrated pools feed the offline fallback; their best-agreeing global threshold sets the reward.
    subset = train.select(range(min(args.calibration_samples, len(train))))
    candidates = index.get_passages(
        model.retrieve(subset["question"], index, k=args.top_k, rerank_top_m=args.top_m).ids
    )
    calibration = reward.calibrate(
        subset["question"], subset["answers"], candidates, save_path=out / "calibration.jsonl"
    )
    reward.threshold = args.threshold if args.threshold is not None else calibration.global_threshold()
    labels = calibration.records["label"]
    print(
        f"Calibration: {len(labels)} pairs, {sum(labels)} answered correctly by generation; "
        f"{len(calibration.thresholds)} questions with both pools; threshold {reward.threshold:.3f} "
        f"({time.time() - start:.0f}s)",
        flush=True,
    )

    results: dict[str, dict] = {}
    bm25 = BM25Retriever(index.corpus)
    for name, ds in tests.items():
        results[f"{name}/bm25s"] = evaluate_retriever(bm25, index, ds, reward, ks=(1, 5, 20), contexts=(1,))
        results[f"{name}/initial"] = evaluate_retriever(
            model, index, ds, reward, ks=(1, 5, 20), contexts=(1,), rerank_top_m=20
        )
        print(name, "bm25s", results[f"{name}/bm25s"], "initial", results[f"{name}/initial"], flush=True)

    config = R3Config(
        output_dir=str(out / "retriever"),
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        num_train_epochs=args.epochs,
        retrieval_top_m=args.top_m,
        retrieval_top_k=args.top_k,
        positive_fallback="offline",
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=0.25,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        eval_recall_at=[1, 5],
        dataloader_num_workers=0,
        warmup_steps=0.1,
    )
    trainer = R3Trainer(
        model=model, args=config, reward_funcs=reward, train_dataset=train, eval_dataset=dev, index=index
    )
    dev_initial = trainer.evaluate()
    trainer.train()
    history = [{**dev_initial, "step": 0}, *trainer.state.log_history]
    trainer.save_model(config.output_dir)
    trainer.create_model_card(dataset_name="nq_train (vendored)")
    print(f"Training done at {time.time() - start:.0f}s", flush=True)

    for name, ds in tests.items():
        results[f"{name}/r3"] = evaluate_retriever(
            trainer.model, index, ds, reward, ks=(1, 5, 20), contexts=(1,), rerank_top_m=20
        )
    print(
        f"\n## Offline demo: {args.eval_samples} questions per test set, SmolLM2-135M-Instruct reader, "
        f"1 passage in context ({time.time() - start:.0f}s in all)\n"
    )
    print("| test set | retriever | RAG accuracy@1 | answer recall@1 | @5 | @20 |")
    print("|---|---|---|---|---|---|")
    for key, m in results.items():
        name, retriever = key.split("/")
        print(
            f"| {name}_test | {retriever} | {100 * m['rag_accuracy@1']:.1f} | {100 * m['answer_recall@1']:.1f} | "
            f"{100 * m['answer_recall@5']:.1f} | {100 * m['answer_recall@20']:.1f} |"
        )
    (out / "results.json").write_text(
        json.dumps(
            {
                "results": results,
                "log_history": history,
                "threshold": reward.threshold,
                "args": vars(args),
                "seconds": time.time() - start,
            },
            indent=1,
        )
    )
    plot(history, out / "training.png")
    print(f"\nWrote {out / 'results.json'} and {out / 'training.png'}; torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
