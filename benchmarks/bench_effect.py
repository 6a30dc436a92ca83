"""Does the LLM reward add anything? Three retrievers trained from the same start for the same number of steps:

(a) supervised: gold passages as positives, bag-of-tokens hard negatives (no LLM at all);
(b) offline stage only: positives and negatives from the calibration pools labelled by real generation, gold passages
    where a question has no positive pool (the paper's first stage, all steps);
(c) offline + on-policy R3: (b) for `--offline-steps`, then on-policy steps rewarded by the LLM.

All three train on the same `--train-samples` questions, every one of which is calibrated (the initial retriever's
top-k labelled by greedy generation), so (a) and (b) differ only in where their labels come from.

Each is evaluated with the same [`RAGEvaluator`] (RAG accuracy@1 with the reader LLM, answer recall@k) on nq_test and
squad_test; every pair gets a paired bootstrap 95% interval. This is the experiment behind the paper's claim that
rewards from the LLM beat relevance labels.

The README's run (41 minutes on 2 CPU cores):

    python benchmarks/bench_effect.py --train-samples 128 --offline-steps 24 --online-steps 8 --eval-samples 150
"""

from __future__ import annotations

import argparse
import itertools
import time

import datasets

from r3hf import AnswerProbabilityReward, R3Trainer, RAGEvaluator, compare_predictions
from r3hf.data import load_qa_dataset
from r3hf.models import resolve_model_path
from r3hf.rewards import Calibration
from r3hf.scripts.utils import DATA, DEMO_READER, cpu_config, demo_index, demo_retriever, write_result
from r3hf.utils import ArgumentParser


def train(model, reward, index, questions, steps: int, online: bool, args, calibration: Calibration | None):
    config = cpu_config(
        "outputs/bench_effect",
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=steps,
        offline_only=not online,
        rerank_top_m=args.rerank_top_m,
        retrieval_top_k=args.retrieval_top_k,
        positive_fallback="offline",
        disable_tqdm=True,
    )
    trainer = R3Trainer(model, reward, config, questions, index=index, calibration=calibration)
    trainer.train()
    return [e for e in trainer.state.log_history if "loss" in e]


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-samples", type=int, default=150, help="questions per test set")
    parser.add_argument("--train-samples", type=int, default=256, help="training questions, all calibrated")
    parser.add_argument("--offline-steps", type=int, default=48)
    parser.add_argument("--online-steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--rerank-top-m", type=int, default=10)
    parser.add_argument("--retrieval-top-k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48, help="reader's generation length, as in the demo")
    parser.add_argument("--out", default="benchmarks/results/effect.json")
    args = parser.parse_args()
    start = time.time()
    fresh = demo_retriever
    model = fresh()
    index = demo_index(model)
    columns = ["id", "question", "answers", "positive_ids"]
    questions = datasets.concatenate_datasets(
        [load_qa_dataset(str(DATA / f"{n}_train.jsonl.gz")).select_columns(columns) for n in ("nq", "squad")]
    ).shuffle(seed=0)
    reward = AnswerProbabilityReward(
        resolve_model_path(DEMO_READER), batch_size=10, max_new_tokens=args.max_new_tokens
    )
    questions = questions.select(range(args.train_samples))
    candidates = model.retrieve(
        questions["question"], index, k=args.retrieval_top_k, rerank_top_m=args.rerank_top_m
    ).rows
    calibration = reward.calibrate(questions["question"], questions["answers"], index.get_passages(candidates))
    reward.threshold = calibration.global_threshold()
    total = args.offline_steps + args.online_steps

    models, training = {}, {}
    models["supervised"] = fresh()
    training["supervised"] = train(models["supervised"], None, index, questions, total, False, args, None)
    models["offline"] = fresh()
    training["offline"] = train(models["offline"], reward, index, questions, total, False, args, calibration)
    models["offline+R3"] = fresh()
    training["offline+R3"] = train(
        models["offline+R3"], reward, index, questions, args.offline_steps, False, args, calibration
    )
    training["offline+R3"] += train(
        models["offline+R3"], reward, index, questions, args.online_steps, True, args, calibration
    )

    report = {"args": vars(args), "threshold": reward.threshold, "training": training, "results": {}}
    for name in ("nq", "squad"):
        test = load_qa_dataset(str(DATA / f"{name}_test.jsonl.gz")).shuffle(seed=0)
        test = test.select(range(min(args.eval_samples, len(test))))
        evaluator = RAGEvaluator.from_dataset(
            test, index, reader=reward.reader, recall_at=[1, 5], rerank_top_m=args.rerank_top_m
        )
        predictions = {label: evaluator.predict(m) for label, m in models.items()}
        report["results"][f"{name}_test"] = {
            "metrics": {label: evaluator.compute_metrics(p) for label, p in predictions.items()},
            "paired_differences": {
                f"{a} - {b}": {
                    m: compare_predictions(predictions[a], predictions[b], m) for m in ("correct@1", "recall@1")
                }
                for a, b in itertools.combinations(predictions, 2)
            },
        }
    report["seconds"] = time.time() - start
    print("| test set | difference | RAG accuracy@1 (points, 95% CI) | answer recall@1 (points, 95% CI) |")
    print("|---|---|---|---|")
    for test_set, result in report["results"].items():
        for pair, d in result["paired_differences"].items():
            acc, rec = d["correct@1"], d["recall@1"]
            print(
                f"| {test_set} | {pair} | {100 * acc['difference']:+.1f} [{100 * acc['low']:+.1f}, "
                f"{100 * acc['high']:+.1f}] | {100 * rec['difference']:+.1f} [{100 * rec['low']:+.1f}, "
                f"{100 * rec['high']:+.1f}] |"
            )
    write_result(args.out, report)


if __name__ == "__main__":
    main()
