"""How well the reader turns a passage into a correct answer, and how well P(answer) predicts it.

R3's reward and the demo's RAG accuracy both rest on the reader: RAG accuracy ≈ answer recall@1 × the share of
passages with an answer that the reader converts into a correct generation, and the reward is only as useful as
P(gold answer | prompt) is a predictor of that generation. On dev questions that have a gold passage (each dev set
shuffled with seed 1; test sets untouched), for each prompt variant:

- *conversion*: greedy generation with the gold passage in context, correct when it contains a gold answer, at several
  generation lengths (generated once at the longest; shorter lengths are the first n tokens of that greedy generation,
  re-tokenized from its text), and the same with a random passage (a correct answer without the evidence);
- *reward separation*: the AUC of P(answer | prompt) between gold passages the reader answered correctly and
  (a) random passages, (b) gold passages it did not, and the median score of each group.

    python benchmarks/bench_reader.py --out benchmarks/results/reader.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from r3hf.data import load_qa_dataset, load_table
from r3hf.evaluation import has_answer
from r3hf.models import resolve_model_path
from r3hf.rewards import CHAT_PROMPT, OPENQA_PROMPT, AnswerProbabilityReward
from r3hf.scripts.utils import DATA, write_result
from r3hf.utils import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {  # name: (template, wrap in the chat template)
    "chat": (CHAT_PROMPT, True),
    "openrag, no chat template": (OPENQA_PROMPT, False),
}


def auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """P(a random positive scores above a random negative), ties counting half."""
    if not len(positive) or not len(negative):
        return None
    greater = (positive[:, None] > negative[None, :]).mean()
    return float(greater + 0.5 * (positive[:, None] == negative[None, :]).mean())


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--reader", default="smollm2-135m-instruct")
    parser.add_argument("--samples", type=int, default=60, help="dev questions per set (nq, squad)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[20, 32, 48, 100], help="max_new_tokens to compare")
    parser.add_argument("--prompt", action="append", choices=list(PROMPTS), help="prompt variants (default: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/reader.json"))
    args = parser.parse_args()

    data = Path(args.data)
    corpus = load_table(str(data / "corpus.jsonl.gz"))
    row_of = {passage_id: row for row, passage_id in enumerate(corpus["id"])}
    rng = np.random.default_rng(0)
    sets, questions, answers, gold, random = [], [], [], [], []
    for name in ("nq", "squad"):
        dev = load_qa_dataset(str(data / f"{name}_dev.jsonl.gz")).shuffle(seed=1)
        dev = dev.filter(lambda r: len(r["positive_ids"]) > 0)
        for r in dev.select(range(min(args.samples, len(dev)))):
            sets.append(name)
            questions.append(r["question"])
            answers.append(r["answers"])
            gold.append(corpus[row_of[r["positive_ids"][0]]])
            random.append(corpus[int(rng.integers(len(corpus)))])
    sets = np.array(sets)
    longest = max(args.lengths)

    report = {"args": vars(args), "questions": {s: int((sets == s).sum()) for s in ("nq", "squad")}, "prompts": {}}
    for prompt in args.prompt or list(PROMPTS):
        template, chat = PROMPTS[prompt]
        reader = AnswerProbabilityReward(
            resolve_model_path(args.reader), prompt_template=template, use_chat_template=chat
        )
        start = time.time()
        generations = {
            context: reader.generate(questions, [[p] for p in passages], max_new_tokens=longest)
            for context, passages in (("gold", gold), ("random", random))
        }
        seconds = time.time() - start
        tokens = {
            c: [reader.tokenizer(g, add_special_tokens=False)["input_ids"] for g in gs]
            for c, gs in generations.items()
        }
        conversion = {}
        for n in args.lengths:
            for context, ids in tokens.items():
                correct = np.array([has_answer(reader.tokenizer.decode(t[:n]), a) for t, a in zip(ids, answers)])
                conversion[f"{context}@{n}"] = {s: float(correct[sets == s].mean()) for s in ("nq", "squad")}
                if context == "gold" and n == longest:
                    answered = correct
        scores = {
            context: np.array(reader.score(questions, passages, answers))
            for context, passages in (("gold", gold), ("random", random))
        }
        separation = {
            "auc_answered_gold_vs_random": auc(scores["gold"][answered], scores["random"]),
            "auc_answered_gold_vs_unanswered_gold": auc(scores["gold"][answered], scores["gold"][~answered]),
            "median_score_answered_gold": float(np.median(scores["gold"][answered])) if answered.any() else None,
            "median_score_unanswered_gold": float(np.median(scores["gold"][~answered])) if (~answered).any() else None,
            "median_score_random": float(np.median(scores["random"])),
        }
        report["prompts"][prompt] = {
            "conversion": conversion,
            "separation_at_longest": separation,
            "median_generated_tokens_gold": float(np.median([len(t) for t in tokens["gold"]])),
            "generation_seconds_at_longest": seconds,
            "examples": [
                {"question": q, "answers": a, "generation": g}
                for q, a, g in zip(questions, answers, generations["gold"])
            ][:10],
        }
        print(f"\n{prompt}: generation {seconds:.0f} s for {2 * len(questions)} prompts at {longest} tokens")
        print("| max_new_tokens | gold passage: nq | squad | random passage: nq | squad |")
        print("|---|---|---|---|---|")
        for n in args.lengths:
            g, r = conversion[f"gold@{n}"], conversion[f"random@{n}"]
            print(
                f"| {n} | {100 * g['nq']:.1f} | {100 * g['squad']:.1f} | {100 * r['nq']:.1f} | {100 * r['squad']:.1f} |"
            )
        print(json.dumps(separation))
    write_result(args.out, report)
    print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
