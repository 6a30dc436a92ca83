"""SQuAD/DPR-style answer matching and the answer metrics: answer recall@k and RAG accuracy."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

from ..utils import plain_passage_text

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: unicode NFD, lower case, no punctuation, no articles, single spaces."""
    text = unicodedata.normalize("NFD", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def has_answer(text: str, answers: Sequence[str] | str) -> bool:
    """Whether `text` contains any of the `answers` as a whole-token span after normalisation (DPR's check)."""
    if isinstance(answers, str):
        answers = [answers]
    tokens = normalize_answer(text).split()
    for answer in answers:
        target = normalize_answer(answer).split()
        if target and any(tokens[i : i + len(target)] == target for i in range(len(tokens) - len(target) + 1)):
            return True
    return False


def first_answer_rank(passages: Sequence, answers: Sequence[str]) -> int | None:
    """The rank (0-based) of the first passage that contains a gold answer, or `None`."""
    return next((r for r, p in enumerate(passages) if has_answer(plain_passage_text(p), answers)), None)


def answer_recall_at_k(
    retrieved: Sequence[Sequence], answers: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5, 20, 100)
) -> dict[str, float]:
    """Share of queries with at least one passage containing an answer among their top `k`, for each `k`.

    Args:
        retrieved: Per query, its ranked passages (strings or `{"title","text"}` dicts).
        answers: Per query, its gold answer aliases.
        ks: Cut-offs.

    Returns:
        `{"answer_recall@1": ..., ...}` in [0, 1].
    """
    if len(retrieved) != len(answers) or not retrieved:
        raise ValueError("retrieved and answers must be non-empty lists of the same length.")
    ranks = [first_answer_rank(passages, gold) for passages, gold in zip(retrieved, answers)]
    return {f"answer_recall@{k}": sum(r is not None and r < k for r in ranks) / len(ranks) for k in ks}


def rag_accuracy(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Share of generations that contain a gold answer (the Self-RAG / PopQA "match" metric)."""
    if len(predictions) != len(answers) or not predictions:
        raise ValueError("predictions and answers must be non-empty lists of the same length.")
    return sum(has_answer(p, a) for p, a in zip(predictions, answers)) / len(predictions)
