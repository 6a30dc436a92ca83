"""Reward benchmark: single-pass answer probability (`score`) against greedy generation, and how well the
thresholded proxy agrees with the generation label.

Candidates per nq_dev question: its gold passage plus the bm25s top passages. Speed: ms per (query, passage) pair
for `score` and for greedy generation of up to 20 tokens, on the same prompts, batched and unbatched. Agreement:
each question's candidates are split in two; the first half calibrates per-query thresholds, and on the second half
the proxy labels (global threshold, calibrated thresholds) are compared with the real generation labels.

    python benchmarks/bench_reward.py --questions 100 --out benchmarks/results/reward.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bm25s
import torch

from r3hf.assets import offline_model_path
from r3hf.evaluation import has_answer
from r3hf.rewards import AnswerProbabilityReward, Calibration
from r3hf.scripts.utils import DATA, read_jsonl, write_result
from r3hf.utils import ArgumentParser, plain_passage_text


def per_pair_ms(fn, n_pairs: int) -> float:
    start = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - start) / n_pairs


def agreement(predicted: list[float | None], truth: list[int]) -> dict[str, float]:
    """Precision and recall of proxy positives against generation labels, over the pairs the proxy labels."""
    kept = [(p, t) for p, t in zip(predicted, truth) if p is not None]
    tp = sum(p == 1.0 and t == 1 for p, t in kept)
    predicted_pos = sum(p == 1.0 for p, _ in kept)
    actual_pos = sum(t == 1 for _, t in kept)
    return {
        "precision": tp / predicted_pos if predicted_pos else float("nan"),
        "recall": tp / actual_pos if actual_pos else float("nan"),
        "accuracy": sum((p == 1.0) == (t == 1) for p, t in kept) / len(kept) if kept else float("nan"),
        "ignored": 1 - len(kept) / len(predicted),
        "pairs": len(predicted),
    }


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--llm", default="smollm2-135m-instruct", help="offline asset name, local path or Hub id")
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=6, help="passages per question (gold + bm25s)")
    parser.add_argument("--speed-pairs", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.1, 0.3, 0.65])
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    data = Path(args.data)
    corpus = read_jsonl(data / "corpus.jsonl.gz")
    by_id = {p["id"]: p for p in corpus}
    questions = read_jsonl(data / "nq_dev.jsonl.gz")[: args.questions]
    bm25 = bm25s.BM25()
    bm25.index(
        bm25s.tokenize([plain_passage_text(p) for p in corpus], stopwords="en", show_progress=False),
        show_progress=False,
    )
    docs, _ = bm25.retrieve(
        bm25s.tokenize([q["question"] for q in questions], stopwords="en", show_progress=False),
        k=args.candidates,
        show_progress=False,
    )
    candidates = []
    for q, row in zip(questions, docs.tolist()):
        ids = list(dict.fromkeys([*q["positive_ids"][:1], *(corpus[i]["id"] for i in row)]))[: args.candidates]
        candidates.append([by_id[i] for i in ids])

    llm = args.llm if Path(args.llm).exists() or "/" in args.llm else offline_model_path(args.llm)
    reward = AnswerProbabilityReward(llm, batch_size=args.batch_size, device=args.device, cache=False)
    device = str(reward.device)
    print(f"LLM {args.llm} on {device} ({torch.get_num_threads()} threads), chat template: {reward.use_chat_template}")

    # Speed, on the first speed-pairs (query, passage) pairs.
    flat = [(q["question"], p, q["answers"]) for q, ps in zip(questions, candidates) for p in ps][: args.speed_pairs]
    qs, ps, ans = [x[0] for x in flat], [x[1] for x in flat], [x[2] for x in flat]
    reward.score(qs[:2], ps[:2], ans[:2])  # warm-up
    speed = {}
    for label, batch_size in (("batched", args.batch_size), ("unbatched", 1)):
        reward.batch_size = batch_size
        speed[f"score_{label}_ms"] = per_pair_ms(lambda: reward.score(qs, ps, ans), len(flat))
        speed[f"generate_{label}_ms"] = per_pair_ms(lambda: reward.generate(qs, [[p] for p in ps], 20), len(flat))
    reward.batch_size = args.batch_size
    print(f"\n## Speed ({len(flat)} pairs, {device}; ms per (query, passage) pair)\n")
    print("| | score (1 forward pass) | greedy generation, ≤20 tokens | generation / score |")
    print("|---|---|---|---|")
    for label in ("batched", "unbatched"):
        s, g = speed[f"score_{label}_ms"], speed[f"generate_{label}_ms"]
        print(f"| {label} (batch {args.batch_size if label == 'batched' else 1}) | {s:.1f} | {g:.1f} | {g / s:.1f}× |")
    speed["generate_batched_over_score_batched"] = speed["generate_batched_ms"] / speed["score_batched_ms"]

    # Agreement: score and generate every candidate once.
    flat_q = [q["question"] for q, ps in zip(questions, candidates) for _ in ps]
    flat_a = [q["answers"] for q, ps in zip(questions, candidates) for _ in ps]
    flat_p = [p for ps in candidates for p in ps]
    half = [j < len(ps) // 2 for ps in candidates for j in range(len(ps))]
    generations = reward.generate(flat_q, [[p] for p in flat_p], 20, show_progress_bar=True)
    truth = [int(has_answer(g, a)) for g, a in zip(generations, flat_a)]
    scores = reward.score(flat_q, flat_p, flat_a)
    calibration = Calibration.from_records(
        [
            {"query": q, "passage_id": p["id"], "score": s, "label": t, "generation": g}
            for q, p, s, t, g, h in zip(flat_q, flat_p, scores, truth, generations, half)
            if h
        ]
    )
    held_out = [i for i, h in enumerate(half) if not h]
    best = calibration.global_threshold()
    globals_ = {f"global {t}": t for t in args.thresholds}
    globals_[f"global {best:.3g} (F1-best on the calibration half)"] = best
    table = {
        name: agreement([1.0 if scores[i] >= t else 0.0 for i in held_out], [truth[i] for i in held_out])
        for name, t in globals_.items()
    }
    table["calibrated per query"] = agreement(
        [calibration.label(flat_q[i], scores[i]) for i in held_out], [truth[i] for i in held_out]
    )
    print(
        f"\n## Agreement with the generation label ({len(held_out)} held-out pairs of {len(questions)} nq_dev "
        f"questions; {sum(truth[i] for i in held_out)} positive by generation; "
        f"{len(calibration.thresholds)} questions calibrated)\n"
    )
    print("| proxy | precision | recall | accuracy | share ignored |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        print(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['accuracy']:.3f} | {row['ignored']:.3f} |"
        )
    if args.out:
        write_result(
            args.out,
            {
                "device": device,
                "speed": speed,
                "agreement": table,
                "generation_positive_rate": sum(truth) / len(truth),
            },
        )


if __name__ == "__main__":
    main()
