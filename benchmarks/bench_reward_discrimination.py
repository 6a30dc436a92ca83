"""Does the reward's score tell which passages the reader turns into a correct answer?

Takes every (question, top-1 passage) pair of a demo run's per-question results (its `predictions` folder), whose
greedy generation the run already checked against the gold answers, scores each pair with the answer-probability
reward (product of the answer tokens' probabilities, and their geometric mean), and reports, over all pairs and over
the pairs whose passage contains an answer, the ROC AUC of the score against the generation label and the
precision / recall at the F1-best threshold. The F1-best threshold is chosen on the same pairs: it describes the
score, it is not a threshold to train with.

    .venv/bin/python benchmarks/bench_reward_discrimination.py --predictions benchmarks/results/demo_500/predictions \\
        --out benchmarks/results/reward_discrimination.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from r3hf.evaluation import has_answer
from r3hf.models import resolve_model_path
from r3hf.rewards import AnswerProbabilityReward
from r3hf.scripts.utils import DATA, read_jsonl, write_result
from r3hf.utils import ArgumentParser, plain_passage_text


def discrimination(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC of `scores` against binary `labels`, and precision / recall at the F1-best threshold."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    auc = mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative))
    f1, threshold = max(
        (2 * ((scores >= t) & (labels == 1)).sum() / ((scores >= t).sum() + labels.sum()), t)
        for t in np.unique(scores)
    )
    hits = ((scores >= threshold) & (labels == 1)).sum()
    return {
        "n": len(labels),
        "positives": int(labels.sum()),
        "auc": float(auc),
        "best_f1": float(f1),
        "precision": float(hits / (scores >= threshold).sum()),
        "recall": float(hits / labels.sum()),
        "threshold": float(threshold),
    }


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, default=Path("benchmarks/results/demo_500/predictions"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--llm", default="smollm2-135m-instruct", help="the run's reader: offline asset, path or Hub id"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reward_discrimination.json"))
    args = parser.parse_args()
    corpus = {row["id"]: row for row in read_jsonl(args.data / "corpus.jsonl.gz")}
    pairs = {}
    for path in sorted(args.predictions.glob("*/*_predictions.jsonl")):
        for record in read_jsonl(path):
            key = (record["question"], record["retrieved_ids"][0])
            pairs.setdefault(key, (record["answers"], int(record["correct@1"])))
    if not pairs:
        parser.error(f"No */*_predictions.jsonl under {args.predictions}: pass a demo run's predictions folder.")
    keys = list(pairs)
    queries = [q for q, _ in keys]
    passages = [{"title": corpus[p]["title"], "text": corpus[p]["text"]} for _, p in keys]
    answers = [pairs[k][0] for k in keys]
    labels = np.array([pairs[k][1] for k in keys])
    contains = np.array([has_answer(plain_passage_text(p), a) for p, a in zip(passages, answers)])
    result = {"pairs": len(keys), "correct": int(labels.sum()), "contains": int(contains.sum())}
    for name, normalize in (("product", False), ("length_normalize", True)):
        reward = AnswerProbabilityReward(
            resolve_model_path(args.llm), batch_size=args.batch_size, length_normalize=normalize
        )
        start = time.time()
        scores = np.array(reward.score(queries, passages, answers))
        result[name] = {"seconds": time.time() - start}
        for subset, mask in (("all", np.ones_like(contains)), ("contains_answer", contains)):
            result[name][subset] = discrimination(scores[mask], labels[mask])
        print(name, result[name])
    write_result(args.out, result)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
