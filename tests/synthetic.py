"""A synthetic RAG environment for trainer tests: the reward pays only for a hidden subset of the corpus."""

import random

import datasets

from r3hf import BagOfTokensIndex

WORDS = (
    "river mountain city king queen war river song film book ship star island bridge tower garden school "
    "church castle forest lake desert market harbour museum palace road train station village valley"
).split()


def make_environment(tokenizer, n_passages: int = 40, n_questions: int = 24, seed: int = 0):
    """Corpus, bag-of-tokens index, question dataset, and the hidden rewarded passage ids."""
    rng = random.Random(seed)
    corpus = [
        {"id": f"p{i}", "title": f"Title {i}", "text": " ".join(rng.choices(WORDS, k=12))} for i in range(n_passages)
    ]
    hidden = {f"p{i}" for i in rng.sample(range(n_passages), n_passages // 5)}
    questions = [" ".join(rng.choices(WORDS, k=5)) + "?" for _ in range(n_questions)]
    gold = sorted(hidden)
    train = datasets.Dataset.from_dict(
        {
            "question": questions,
            "answers": [["unused"]] * n_questions,
            "positive_ids": [[gold[i % len(gold)]] for i in range(n_questions)],
        }
    )
    index = BagOfTokensIndex.build(corpus, tokenizer, max_length=32)
    return corpus, index, train, hidden


def hidden_subset_reward(hidden):
    def reward(queries, passages, answers, **kwargs):
        return [1.0 if p["id"] in hidden else 0.0 for p in passages]

    reward.__name__ = "hidden_subset"
    return reward


def top1_reward_share(model, index, questions, hidden, m: int = 40, k: int = 10) -> float:
    results = model.retrieve(questions, index, k=k, rerank_top_m=m)
    return sum(index.corpus[row[0]]["id"] in hidden for row in results.rows.tolist()) / len(questions)
