import evaluate
import pytest

from r3hf.evaluation import answer_recall_at_k, has_answer, normalize_answer, rag_accuracy
from r3hf.metrics import RAG_ACCURACY_PATH


def test_normalization_and_has_answer():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert has_answer("It was written by William Shakespeare.", ["william shakespeare"])
    assert has_answer("Answer: the Beatles", "Beatles")
    assert not has_answer("Shakespearean drama", ["Shakespeare"])  # whole tokens only
    assert not has_answer("anything", ["", "the"])  # answers that normalise to nothing never match


def test_answer_recall_at_k():
    retrieved = [["nothing", "paris is nice", "x"], [{"title": "Rome", "text": "capital"}, "y"], ["a", "b"]]
    answers = [["Paris"], ["rome"], ["zzz"]]
    assert answer_recall_at_k(retrieved, answers, ks=(1, 2)) == {"answer_recall@1": 1 / 3, "answer_recall@2": 2 / 3}
    with pytest.raises(ValueError, match="same length"):
        answer_recall_at_k(retrieved, answers[:2])


def test_rag_accuracy_and_the_evaluate_module():
    predictions, references = ["It is Paris.", "no idea", "1889"], [["paris"], ["London"], ["1889", "eighteen"]]
    assert rag_accuracy(predictions, references) == pytest.approx(2 / 3)
    metric = evaluate.load(RAG_ACCURACY_PATH)
    assert metric.compute(predictions=predictions, references=references) == {"rag_accuracy": pytest.approx(2 / 3)}
