"""Choosing a hybrid first stage's final ranking on dev questions: by answer recall@1, or by the reader's answers."""

from __future__ import annotations

from collections.abc import Sequence

from ..retrieval import FUSIONS, candidate_scores, first_stage_candidates, fuse
from ..utils import plain_passage_text
from .answers import has_answer
from .evaluator import RAGEvaluator

FUSION_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SELECTED_FUSIONS = ("none", "rrf", "weighted")  # what a fusion selection compares unless told otherwise


def select_fusion(
    model,
    index,
    questions: Sequence[str],
    answers: Sequence[Sequence[str]],
    rerank_top_m: int,
    first_stage: str = "hybrid",
    weights: Sequence[float] = FUSION_WEIGHTS,
    batch_size: int = 32,
    fusions: Sequence[str] = SELECTED_FUSIONS,
) -> dict:
    """Choose the final ranking of a bm25 or hybrid first stage on **dev** questions: answer-recall@1 of each of
    [`fusion_options`] (by default E(q)·E(d) alone, reciprocal-rank fusion with bm25s's ranking, and each rank-
    `"weighted"` fusion weight); the best wins, the earlier option on a tie. The candidates are embedded once for
    every option.

    Returns:
        `{"fusion", "fusion_weight", "recall@1": {option: value}, "n"}`, to pass on as `fusion=` and
        `fusion_weight=`.
    """
    questions = list(questions)
    options = fusion_options(weights, fusions)
    query_embeds = model.encode_query(questions, batch_size=batch_size, convert_to_sparse_tensor=False)
    rows, bm25_ranks, bm25_scores = first_stage_candidates(index, questions, query_embeds, rerank_top_m, first_stage)
    dense = candidate_scores(model, query_embeds, rows, index, batch_size)
    unique = sorted(set(rows[rows >= 0].tolist()))
    texts = {row: plain_passage_text(p) for row, p in zip(unique, index.get_passages(unique))}
    contains = {
        (row, q): has_answer(texts[row], answers[q])
        for q, candidates in enumerate(rows.tolist())
        for row in candidates
        if row >= 0
    }
    recall, best = {}, None
    for name, fusion, weight in options:
        final = fuse(dense, bm25_ranks, fusion, weight, bm25_scores)
        top = rows.gather(1, final.argmax(dim=1, keepdim=True)).squeeze(1)
        recall[name] = sum(contains[(int(r), q)] for q, r in enumerate(top.tolist())) / len(questions)
        if best is None or recall[name] > recall[best[0]]:
            best = (name, fusion, weight)
    return {"fusion": best[1], "fusion_weight": best[2], "recall@1": recall, "n": len(questions)}


def fusion_options(
    weights: Sequence[float] = FUSION_WEIGHTS, fusions: Sequence[str] = SELECTED_FUSIONS
) -> list[tuple[str, str, float]]:
    """The final rankings a fusion selection compares, as `(name, fusion, fusion_weight)`, in the order of
    `fusions`: `"none"` (E(q)·E(d) alone) and `"rrf"` once each, `"weighted"` and `"score"` once per weight in
    `weights` (named `"weighted:0.3"`, `"score:0.3"`)."""
    unknown = [f for f in fusions if f not in FUSIONS]
    if unknown or not fusions:
        raise ValueError(f"fusions must name at least one of {FUSIONS}, got {list(fusions)}.")
    options = []
    for fusion in dict.fromkeys(fusions):
        if fusion in ("none", "rrf"):
            options.append((fusion, fusion, 0.5))
        else:
            options += [(f"{fusion}:{w:g}", fusion, float(w)) for w in weights]
    return options


def select_fusion_by_reader(
    model,
    evaluator: RAGEvaluator,
    weights: Sequence[float] = FUSION_WEIGHTS,
    fusions: Sequence[str] = SELECTED_FUSIONS,
) -> dict:
    """Choose the final ranking of `evaluator`'s bm25 or hybrid first stage by what its reader answers: RAG
    accuracy@1 on the evaluator's (**dev**) questions for each of [`fusion_options`], ties broken by answer recall@1,
    then by the earlier option. [`select_fusion`] needs no reader but ranks by whether the top passage holds an answer,
    which is not whether this reader answers from it. The evaluator's generation cache keeps every answer, so a
    passage that several options or retrievers rank first is read once; the evaluator is left set to the choice.

    Returns:
        `{"fusion", "fusion_weight", "rag_accuracy@1": {option: value}, "recall@1": {option: value}, "n"}`.
    """
    if evaluator.reader is None or 1 not in evaluator.rag_contexts:
        raise ValueError("select_fusion_by_reader needs an evaluator with a reader and rag_contexts including 1.")
    if evaluator.first_stage == "bag_of_tokens":
        raise ValueError(
            "The bag-of-tokens first stage has no bm25s ranking to fuse with: build the evaluator with "
            "first_stage='hybrid' or 'bm25'."
        )
    accuracy, recall, best = {}, {}, None
    for name, fusion, weight in fusion_options(weights, fusions):
        evaluator.fusion, evaluator.fusion_weight = fusion, weight
        records = evaluator.predict(model)
        accuracy[name] = sum(r["correct@1"] for r in records) / len(records)
        recall[name] = sum(r["first_answer_rank"] == 0 for r in records) / len(records)
        if best is None or (accuracy[name], recall[name]) > (accuracy[best[0]], recall[best[0]]):
            best = (name, fusion, weight)
    evaluator.fusion, evaluator.fusion_weight = best[1], best[2]
    return {
        "fusion": best[1],
        "fusion_weight": best[2],
        "rag_accuracy@1": accuracy,
        "recall@1": recall,
        "n": len(evaluator.questions),
    }
