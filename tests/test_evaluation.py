import json

import evaluate
import numpy as np
import pytest

from r3hf import BagOfTokensIndex, BM25Retriever, RAGEvaluator, compare_predictions, paired_bootstrap
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


class CountingReader:
    """A stand-in reader LLM: answers with the first passage's title, and counts what it is asked."""

    def __init__(self):
        self.calls = 0
        self.lengths = []

    def generate(self, queries, passages, max_new_tokens=20, show_progress_bar=None):
        self.calls += len(queries)
        self.lengths.append(max_new_tokens)
        return [ps[0]["title"] for ps in passages]


@pytest.fixture
def qa_index(bert_tokenizer):
    corpus = [
        {"id": "h", "title": "Shakespeare", "text": "hamlet was written by shakespeare"},
        {"id": "p", "title": "Paris", "text": "paris is the capital of france"},
        {"id": "r", "title": "Rome", "text": "rome is the capital of italy"},
    ]
    return BagOfTokensIndex.build(corpus, bert_tokenizer)


def test_rag_evaluator_metrics_outputs_and_generation_cache(qa_index, tmp_path):
    reader = CountingReader()
    evaluator = RAGEvaluator(
        ["who wrote hamlet", "capital of france"],
        [["Shakespeare"], ["Paris"]],
        qa_index,
        reader=reader,
        recall_at=[1, 2],
        name="toy",
        ids=["q1", "q2"],
    )
    assert evaluator.primary_metric == "toy_rag_accuracy@1"
    bm25 = BM25Retriever(qa_index)
    metrics = evaluator(bm25, output_path=tmp_path, epoch=1, steps=10)
    assert metrics == {"toy_answer_recall@1": 1.0, "toy_answer_recall@2": 1.0, "toy_rag_accuracy@1": 1.0}
    records = [json.loads(line) for line in (tmp_path / "toy_predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["q1", "q2"] and records[0]["retrieved_ids"][0] == "h"
    assert records[1]["generation@1"] == "Paris" and records[1]["correct@1"] is True
    assert json.loads((tmp_path / "toy_results.jsonl").read_text())["steps"] == 10
    with pytest.raises(ValueError, match="No metrics to save"):  # never a placeholder line without metrics
        evaluator.save_metrics({}, tmp_path)
    assert len((tmp_path / "toy_results.jsonl").read_text().splitlines()) == 1
    evaluator(bm25)  # same top passages: served from the generation cache
    assert reader.calls == 2
    RAGEvaluator(["who wrote hamlet"], [["Shakespeare"]], qa_index, reader=reader, max_new_tokens=7).predict(bm25)
    assert reader.lengths == [20, 7]  # the reader's own length unless the evaluator sets one


def test_bm25_retriever_follows_the_retrieve_protocol(qa_index, bert_tokenizer):
    results = BM25Retriever(qa_index).retrieve(["capital of italy", "hamlet"], qa_index, k=2, rerank_top_m=50)
    assert results.rows.shape == results.scores.shape == (2, 2) and results.rows[:, 0].tolist() == [2, 0]
    other = BagOfTokensIndex.build(["x"], bert_tokenizer)
    with pytest.raises(ValueError, match="built on another index"):
        BM25Retriever(qa_index).retrieve(["x"], other)


def test_evaluator_rejects_mismatched_inputs(qa_index):
    with pytest.raises(ValueError, match="as many answers as questions"):
        RAGEvaluator(["a", "b"], [["x"]], qa_index)
    with pytest.raises(ValueError, match="at least 1"):
        RAGEvaluator(["a"], [["x"]], qa_index, recall_at=[0])


def test_paired_bootstrap_and_comparison():
    same = paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1])
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0, "n": 4}
    a, b = [1] * 60 + [0] * 40, [1] * 40 + [0] * 60  # a is right on 20 more of 100 questions
    result = paired_bootstrap(a, b)
    assert result["difference"] == pytest.approx(0.2) and 0.1 < result["low"] < 0.2 < result["high"] < 0.3
    records_a = [{"id": i, "first_answer_rank": 0 if i < 6 else None, "correct@1": i < 3} for i in range(10)]
    records_b = [{"id": i, "first_answer_rank": 1, "correct@1": False} for i in reversed(range(10))]
    assert compare_predictions(records_a, records_b, "correct@1")["difference"] == pytest.approx(0.3)
    assert compare_predictions(records_a, records_b, "recall@1")["difference"] == pytest.approx(0.6)
    assert compare_predictions(records_a, records_b, "recall@2")["difference"] == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="cover other questions"):
        compare_predictions(records_a, records_b[:5])
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap([1, 0, 1], [1])


def test_seeded_bootstrap_covers_the_variance_between_training_runs():
    """Two training runs of one retriever, one 20 points better than the baseline and one 20 points worse, each with
    a paired interval well away from 0: the interval across both runs covers both, where pooling their questions
    would give a narrow one around 0."""
    from r3hf import compare_predictions_across_seeds, seeded_paired_bootstrap

    base = [1] * 100 + [0] * 100
    better = [1] * 140 + [0] * 60  # +20 points on the same questions
    worse = [1] * 60 + [0] * 140  # -20 points
    for run in (better, worse):
        alone = paired_bootstrap(run, base)
        assert abs(seeded_paired_bootstrap([run], [base])["low"] - alone["low"]) < 0.02  # one run: as paired_bootstrap
        assert alone["low"] > 0.1 or alone["high"] < -0.1
    both = seeded_paired_bootstrap([better, worse], [base])
    assert both["difference"] == pytest.approx(0.0) and both["runs_a"] == 2 and both["runs_b"] == 1
    assert both["low"] < -0.15 and both["high"] > 0.15
    pooled = paired_bootstrap(np.mean([better, worse], axis=0), base)
    assert pooled["high"] - pooled["low"] < (both["high"] - both["low"]) / 2
    same_everywhere = {"difference": 1.0, "low": 1.0, "high": 1.0, "n": 3, "runs_a": 3, "runs_b": 1}
    assert seeded_paired_bootstrap([[1, 1, 1]] * 3, [[0, 0, 0]]) == same_everywhere
    with pytest.raises(ValueError, match="same questions"):
        seeded_paired_bootstrap([[1, 0, 1], [1, 0]], [[1, 0, 1]])

    def records(values: list[int], order=range(200)) -> list[dict]:
        return [{"id": i, "correct@1": bool(values[i]), "first_answer_rank": 0} for i in order]

    runs = [records(better), records(worse, order=reversed(range(200)))]  # matched by id, not by position
    assert compare_predictions_across_seeds(runs, [records(base)]) == both
    assert compare_predictions_across_seeds(runs, [records(base)], "recall@1")["difference"] == 0.0
    with pytest.raises(ValueError, match="Some runs' results cover other questions"):
        compare_predictions_across_seeds([records(better), records(worse, order=range(199))], [records(base)])


def test_matched_choice_reads_the_first_choice_word():
    from r3hf.closed_set import matched_choice

    assert matched_choice("True. The claim holds.", ["true", "false"]) == 0
    assert matched_choice("It is false, not true", ["true", "false"]) == 1
    assert matched_choice("I cannot tell", ["true", "false"]) is None
    assert matched_choice("a plant needs B", ["A", "B", "C", "D"]) == 1  # the article "a" is not choice A
    assert matched_choice("The answer is (C): rain", ["A", "B", "C", "D"]) == 2


class ScriptedReader:
    """A stand-in reader that gives a fixed answer per question, whatever the passages."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def generate(self, queries, passages, max_new_tokens=20, show_progress_bar=None):
        return [self.answers[q] for q in queries]


def test_closed_set_accuracy_against_hand_computed_cases(qa_index):
    questions = ["claim one", "claim two", "claim three", "which is wet?\nA: sand\nB: rain\nC: salt\nD: dust"]
    choices = [["true", "false"]] * 3 + [["A", "B", "C", "D"]]
    gold = [0, 1, 1, 1]
    reader = ScriptedReader(
        {questions[0]: "True.", questions[1]: "true, it holds", questions[2]: "no idea", questions[3]: "B: rain"}
    )
    evaluator = RAGEvaluator(
        questions, gold, qa_index, reader=reader, choices=choices, rag_contexts=(1, 2), name="closed"
    )
    records = evaluator.predict(BM25Retriever(qa_index))
    assert [r["choice@1"] for r in records] == [0, 0, None, 1]
    assert [r["correct@1"] for r in records] == [True, False, False, True]
    # correct: questions 1 and 4, at 1 and at 2 passages in context; no answer recall for closed-set tasks
    assert evaluator.compute_metrics(records) == {"closed_rag_accuracy@1": 0.5, "closed_rag_accuracy@2": 0.5}
    with pytest.raises(ValueError, match="gold choice indices"):
        RAGEvaluator(questions, [0, 1, 2, 1], qa_index, reader=reader, choices=choices)
    with pytest.raises(ValueError, match="pass reader="):
        RAGEvaluator(questions, gold, qa_index, choices=choices)
