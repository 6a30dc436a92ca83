"""A small real closed-set check on CPU: true/false claims made from the vendored QA pairs, read by the packaged reader.

For each dev question with a gold passage (nq_dev and squad_dev, each shuffled with seed 0), two claims:
"The answer to "<question>" is <answer>." with its gold answer (true), and with the answer of another question of
the same type (false; the type is a number when the answer holds a digit, a name when it starts with a capital letter,
other text otherwise). Each claim is read with PubHealth's closed-set prompt (OpenRAG's instruction: "Is the following
statement correct or not? Say true if it's correct; otherwise say false."), with its question's gold passage in context
and with a random passage:

- *accuracy*: the greedy generation (20 new tokens, OpenRAG's closed-set length) matched to the gold label by
  `matched_choice` (the first word that is "true" or "false");
- *the reward's agreement with generation*: the closed-set reward (1 when P(gold label) > P(other label), all choices in
  one forward pass) against whether the generation was correct: agreement, precision and recall of the reward.

    python benchmarks/bench_closed_set.py --out benchmarks/results/closed_set.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from r3hf.closed_set import PUBHEALTH_CHOICES, matched_choice
from r3hf.data import load_qa_dataset, load_table
from r3hf.models import resolve_model_path
from r3hf.rewards import PUBHEALTH_PROMPT, AnswerProbabilityReward
from r3hf.scripts.utils import DATA, DEMO_READER, timed, write_result
from r3hf.utils import ArgumentParser


def answer_type(answer: str) -> str:
    if any(ch.isdigit() for ch in answer):
        return "number"
    return "name" if answer[:1].isupper() else "other"


def make_claims(rows: list[dict], rng: np.random.Generator) -> list[dict]:
    """A true and a false claim per question, the false one with another question's answer of the same type."""
    by_type: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_type.setdefault(answer_type(row["answers"][0]), []).append(i)
    claims = []
    for row in rows:
        gold = row["answers"][0]
        others = [j for j in by_type[answer_type(gold)] if rows[j]["answers"][0] not in row["answers"]]
        if not others:
            continue
        wrong = rows[int(rng.choice(others))]["answers"][0]
        for answer, label in ((gold, 0), (wrong, 1)):  # the index into ["true", "false"]
            claim = f'The answer to "{row["question"]}" is {answer}.'
            claims.append({"question": claim, "gold": label, "positive": row["positive_ids"][0], "set": row["set"]})
    return claims


def agreement(rewards: list[float], correct: list[bool]) -> dict[str, float]:
    r, c = np.asarray(rewards) > 0, np.asarray(correct)
    return {
        "agreement": float((r == c).mean()),
        "precision": float((r & c).sum() / max(r.sum(), 1)),
        "recall": float((r & c).sum() / max(c.sum(), 1)),
        "reward_positive_rate": float(r.mean()),
    }


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--reader", default=DEMO_READER)
    parser.add_argument("--samples", type=int, default=40, help="dev questions per set (nq, squad)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/closed_set.json")
    args = parser.parse_args()

    data = Path(args.data)
    corpus = load_table(str(data / "corpus.jsonl.gz"))
    row_of = {passage_id: row for row, passage_id in enumerate(corpus["id"])}
    rng = np.random.default_rng(0)
    rows = []
    for name in ("nq", "squad"):
        dev = load_qa_dataset(str(data / f"{name}_dev.jsonl.gz")).shuffle(seed=0)
        dev = dev.filter(lambda ex: bool(ex["positive_ids"]) and ex["positive_ids"][0] in row_of)
        rows += [{**ex, "set": name} for ex in dev.select(range(min(args.samples, len(dev))))]
    claims = make_claims(rows, rng)
    reward = AnswerProbabilityReward(
        resolve_model_path(args.reader), prompt_template=PUBHEALTH_PROMPT, max_new_tokens=args.max_new_tokens
    )
    questions = [c["question"] for c in claims]
    gold = [c["gold"] for c in claims]
    choices = [PUBHEALTH_CHOICES] * len(claims)
    contexts = {
        "gold passage": [corpus[row_of[c["positive"]]] for c in claims],
        "random passage": [corpus[int(i)] for i in rng.integers(0, len(corpus), len(claims))],
    }
    report = {"args": vars(args), "claims": len(claims), "results": {}}
    print(f"{len(claims)} claims from {len(rows)} dev questions; reader {args.reader}")
    print("| context | accuracy | no choice given | reward agreement | reward precision | reward recall | seconds |")
    print("|---|---|---|---|---|---|---|")
    for label, passages in contexts.items():
        (generations, rewards), seconds = timed(
            lambda passages=passages: (
                reward.generate(questions, [[p] for p in passages], show_progress_bar=True),
                reward.score_choices(questions, passages, choices, gold),
            )
        )
        predicted = [matched_choice(g, PUBHEALTH_CHOICES) for g in generations]
        correct = [p == g for p, g in zip(predicted, gold)]
        result = {
            "accuracy": float(np.mean(correct)),
            "no_choice": float(np.mean([p is None for p in predicted])),
            "predicted_true_rate": float(np.mean([p == 0 for p in predicted])),
            **agreement(rewards, correct),
            "seconds": seconds,
            "examples": [
                {"claim": q, "gold": PUBHEALTH_CHOICES[g], "generation": gen, "reward": r}
                for q, g, gen, r in list(zip(questions, gold, generations, rewards))[:6]
            ],
        }
        report["results"][label] = result
        print(
            f"| {label} | {100 * result['accuracy']:.1f} | {100 * result['no_choice']:.1f} | "
            f"{100 * result['agreement']:.1f} | {100 * result['precision']:.1f} | {100 * result['recall']:.1f} | "
            f"{seconds:.0f} |"
        )
    write_result(args.out, report)
    print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
