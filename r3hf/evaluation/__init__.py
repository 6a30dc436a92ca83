"""RAG evaluation: answer matching and metrics, the [`RAGEvaluator`], fusion selection on dev questions, and paired
comparisons of two retrievers question by question."""

from .answers import answer_recall_at_k, first_answer_rank, has_answer, normalize_answer, rag_accuracy
from .evaluator import RAGEvaluator
from .fusion_selection import FUSION_WEIGHTS, SELECTED_FUSIONS, fusion_options, select_fusion, select_fusion_by_reader
from .statistics import (
    compare_predictions,
    compare_predictions_across_seeds,
    paired_bootstrap,
    seeded_paired_bootstrap,
)

__all__ = [
    "FUSION_WEIGHTS",
    "SELECTED_FUSIONS",
    "RAGEvaluator",
    "answer_recall_at_k",
    "compare_predictions",
    "compare_predictions_across_seeds",
    "first_answer_rank",
    "fusion_options",
    "has_answer",
    "normalize_answer",
    "paired_bootstrap",
    "rag_accuracy",
    "seeded_paired_bootstrap",
    "select_fusion",
    "select_fusion_by_reader",
]
