"""RAG accuracy: the share of generations that contain a gold answer (Self-RAG / PopQA "match"), as an `evaluate`
metric. Load it with `evaluate.load(r3hf.metrics.RAG_ACCURACY_PATH)`."""

import datasets
import evaluate

from r3hf.evaluation import has_answer

_DESCRIPTION = "Share of predictions containing any gold answer alias after SQuAD normalisation (whole-token match)."
_KWARGS = """
Args:
    predictions (`list[str]`): generated answers.
    references (`list[list[str]]`): gold answer aliases per prediction.
Returns:
    rag_accuracy (`float`): in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS)
class RagAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions, references):
        hits = [has_answer(p, r) for p, r in zip(predictions, references)]
        return {"rag_accuracy": sum(hits) / len(hits) if hits else 0.0}
