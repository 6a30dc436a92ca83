"""RAG evaluation: SQuAD/DPR-style answer matching, answer-recall@k, RAG accuracy, the [`RAGEvaluator`] that the
trainer, the evaluation script and the demo share, and paired comparisons of two retrievers question by question."""

from __future__ import annotations

import json
import os
import re
import string
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap
from transformers.utils import logging

from .closed_set import matched_choice
from .integrations.sparse_encoder_retriever import as_retriever
from .protocols import ReaderLike, RetrieverLike
from .retrieval import FUSIONS, candidate_scores, check_first_stage, first_stage_candidates, fuse
from .utils import atomic_write_text, plain_passage_text

logger = logging.get_logger(__name__)

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


class RAGEvaluator:
    """Evaluate a retriever for RAG, in the shape of sentence-transformers' evaluators: answer-recall@k of its ranked
    passages and RAG accuracy of a reader LLM that answers with the top `n` passages in context (greedy generation,
    correct when the generation contains a gold answer).

    A retriever is anything with `retrieve(queries, index, k=..., rerank_top_m=...) -> SearchResults` (see
    [`RetrieverLike`]): a [`SIDRModel`] (late-parametric search) or a [`BM25Retriever`]. Generations are cached per (question, passages in
    context), so evaluating several retrievers that put the same passages first costs one generation.

    Args:
        questions: The questions.
        answers: Per question, its gold answer aliases.
        index: The index whose corpus the retrievers search.
        reader: A [`Reader`] (or anything with its `generate`, see [`ReaderLike`]) for RAG accuracy; `None` for
            recall only.
        recall_at: Cut-offs of answer-recall@k.
        rag_contexts: Numbers of passages in the reader's context.
        rerank_top_m: Candidates re-ranked per question by late-parametric retrievers (from each first stage).
        first_stage: Where late-parametric retrievers take their candidates: `"bag_of_tokens"` (the paper's),
            `"bm25"` or `"hybrid"` (see [`r3hf.retrieval.retrieve`]).
        fusion, fusion_weight: Their final ranking: E(q)·E(d) (`"none"`), or its `"rrf"` / `"weighted"` / `"score"`
            fusion with bm25s (see [`r3hf.retrieval.fuse`]).
        name: Prefix of the metric names (`{name}_rag_accuracy@1`).
        ids: Question ids written with the per-question results (default: row numbers).
        max_new_tokens: Generation length (default: the reader's `max_new_tokens`).
        batch_size: Queries encoded at a time.
        show_progress_bar: Show progress bars (default: for long runs).
        generation_cache: A dict to keep generations in, shared with other evaluators of the same questions and
            reader (another pipeline, another index over the same corpus); a new one by default.
        choices: For a closed-set task, each question's choice labels (`["true", "false"]`, `["A", "B", "C", "D"]`);
            `answers` then holds each gold choice's index. A generation is correct when the choice it gives
            ([`matched_choice`]: its first word that is a choice label) is the gold one. Answer recall does not apply
            and is not reported.
    """

    def __init__(
        self,
        questions: Sequence[str],
        answers: Sequence[Sequence[str]],
        index,
        reader: ReaderLike | None = None,
        recall_at: Sequence[int] = (1, 5, 20),
        rag_contexts: Sequence[int] = (1,),
        rerank_top_m: int = 100,
        first_stage: str = "bag_of_tokens",
        fusion: str = "none",
        fusion_weight: float = 0.5,
        name: str = "",
        ids: Sequence | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        generation_cache: dict | None = None,
        choices: Sequence[Sequence[str]] | None = None,
    ):
        if not questions or len(questions) != len(answers):
            raise ValueError(
                f"RAGEvaluator needs as many answers as questions, and at least one; got {len(questions)} questions "
                f"and {len(answers)} answers."
            )
        if ids is not None and len(ids) != len(questions):
            raise ValueError(f"{len(ids)} ids for {len(questions)} questions.")
        if (
            (not recall_at and choices is None)
            or min(recall_at, default=1) < 1
            or (rag_contexts and min(rag_contexts) < 1)
        ):
            raise ValueError(f"Cut-offs must be at least 1, got recall_at={recall_at}, rag_contexts={rag_contexts}.")
        self.questions = list(questions)
        if choices is not None:
            if len(choices) != len(questions):
                raise ValueError(f"{len(choices)} choice lists for {len(questions)} questions.")
            if reader is None:
                raise ValueError("A closed-set evaluation measures the reader's answers: pass reader=.")
            bad = [i for i, (a, c) in enumerate(zip(answers, choices)) if not (isinstance(a, int) and 0 <= a < len(c))]
            if bad:
                raise ValueError(
                    f"With choices, answers are gold choice indices; question {bad[0]} has {answers[bad[0]]!r} for "
                    f"{len(choices[bad[0]])} choices."
                )
            recall_at = ()
        self.choices = [list(c) for c in choices] if choices is not None else None
        self.answers = (
            list(answers) if choices is not None else [[a] if isinstance(a, str) else list(a) for a in answers]
        )
        self.ids = list(ids) if ids is not None else list(range(len(questions)))
        self.index = index
        self.reader = reader
        self.recall_at = sorted(set(recall_at))
        self.rag_contexts = sorted(set(rag_contexts)) if reader is not None else []
        check_first_stage(first_stage, fusion, fusion_weight)
        self.rerank_top_m = rerank_top_m
        self.first_stage, self.fusion, self.fusion_weight = first_stage, fusion, fusion_weight
        self.name = name
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar
        first = f"rag_accuracy@{self.rag_contexts[0]}" if self.rag_contexts else f"answer_recall@{self.recall_at[0]}"
        self.primary_metric = self._prefixed(first)
        self._generations: dict[tuple[int, tuple[int, ...]], str] = (
            {} if generation_cache is None else generation_cache
        )

    @classmethod
    def from_dataset(cls, dataset, index, reader=None, **kwargs) -> RAGEvaluator:
        """An evaluator over a `datasets.Dataset` with `question` and `answers` columns (and `id`, when present)."""
        if not {"question", "answers"} <= set(dataset.column_names):
            raise ValueError(f"The dataset needs 'question' and 'answers' columns; it has {dataset.column_names}.")
        if len(dataset) == 0:
            raise ValueError("The evaluation dataset is empty: pass at least one question with its answers.")
        ids = dataset["id"] if "id" in dataset.column_names else None
        if "choices" in dataset.column_names:
            kwargs.setdefault("choices", dataset["choices"])
        return cls(dataset["question"], dataset["answers"], index, reader=reader, ids=ids, **kwargs)

    def _prefixed(self, metric: str) -> str:
        return f"{self.name}_{metric}" if self.name else metric

    @property
    def depth(self) -> int:
        """Passages retrieved per question."""
        return min(max([*self.recall_at, *self.rag_contexts, 1]), len(self.index))

    def predict(self, retriever: RetrieverLike, rows: Sequence[int] | None = None) -> list[dict]:
        """Per-question results of a retriever ([`SIDRModel`], [`BM25Retriever`], or any sentence-transformers
        `SparseEncoder`, scored by E(q)·E(d) as a SIDRModel is) for the given question rows (default all): the
        retrieved passage ids, the rank of the first passage with an answer, and per context size the reader's
        generation and whether it is correct."""
        rows = list(range(len(self.questions))) if rows is None else list(rows)
        if not rows:
            return []
        retriever = as_retriever(retriever)
        questions = [self.questions[i] for i in rows]
        results = retriever.retrieve(
            questions,
            self.index,
            k=self.depth,
            rerank_top_m=max(self.rerank_top_m, self.depth),
            first_stage=self.first_stage,
            fusion=self.fusion,
            fusion_weight=self.fusion_weight,
        )
        ranked = results.rows.tolist()
        passages = self.index.get_passages(ranked)
        has_ids = "id" in self.index.corpus.column_names
        records = [
            {
                "id": self.ids[i],
                "question": self.questions[i],
                "answers": self.answers[i],
                "retrieved_ids": [p["id"] for p in ps] if has_ids else r,
                "first_answer_rank": None if self.choices else first_answer_rank(ps, self.answers[i]),
            }
            for i, r, ps in zip(rows, ranked, passages)
        ]
        for n in self.rag_contexts:
            keys = [(i, tuple(r[:n])) for i, r in zip(rows, ranked)]
            todo = [key for key in dict.fromkeys(keys) if key not in self._generations]
            if todo:
                length = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
                generations = self.reader.generate(
                    [self.questions[i] for i, _ in todo],
                    [self.index.get_passages(list(context)) for _, context in todo],
                    show_progress_bar=self.show_progress_bar,
                    **length,
                )
                self._generations.update(zip(todo, generations))
            for record, key, i in zip(records, keys, rows):
                generation = record[f"generation@{n}"] = self._generations[key]
                if self.choices is None:
                    record[f"correct@{n}"] = has_answer(generation, self.answers[i])
                else:
                    record[f"choice@{n}"] = matched_choice(generation, self.choices[i])
                    record[f"correct@{n}"] = record[f"choice@{n}"] == self.answers[i]
        return records

    def compute_metrics(self, records: Sequence[dict]) -> dict[str, float]:
        """Name-prefixed metrics of per-question results (as [`predict`] returns them, possibly gathered from several
        processes)."""
        if not records:
            raise ValueError("No per-question results to compute metrics from.")
        ranks = [r["first_answer_rank"] for r in records]
        metrics = {
            self._prefixed(f"answer_recall@{k}"): sum(r is not None and r < k for r in ranks) / len(ranks)
            for k in self.recall_at
        }
        for n in self.rag_contexts:
            metrics[self._prefixed(f"rag_accuracy@{n}")] = sum(r[f"correct@{n}"] for r in records) / len(records)
        return metrics

    def __call__(
        self, model, output_path: str | os.PathLike | None = None, epoch: float = -1, steps: int = -1
    ) -> dict[str, float]:
        """Evaluate `model` on every question; with `output_path`, also write the per-question results
        (`{name}_predictions.jsonl`) and append the metrics to `{name}_results.jsonl` in that folder."""
        records = self.predict(model)
        metrics = self.compute_metrics(records)
        if output_path is not None:
            self.save_predictions(records, output_path)
            self.save_metrics(metrics, output_path, epoch=epoch, steps=steps)
        logger.info(f"RAG evaluation {self.name or ''} (epoch {epoch}, step {steps}): {metrics}")
        return metrics

    def _file(self, output_path: str | os.PathLike, kind: str) -> Path:
        return Path(output_path) / (f"{self.name}_{kind}.jsonl" if self.name else f"{kind}.jsonl")

    def save_predictions(self, records: Sequence[dict], output_path: str | os.PathLike) -> Path:
        """Write per-question results (as [`predict`] returns them) to `{name}_predictions.jsonl` in `output_path`,
        atomically; returns the file."""
        predictions = self._file(output_path, "predictions")
        atomic_write_text(predictions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return predictions

    def save_metrics(
        self, metrics: dict[str, float], output_path: str | os.PathLike, epoch: float = -1, steps: int = -1
    ) -> Path:
        """Append one line of metrics (as [`compute_metrics`] returns them), with the epoch and step they were
        measured at, to `{name}_results.jsonl` in `output_path`; returns the file."""
        if not metrics:
            raise ValueError("No metrics to save: pass compute_metrics(records), or save the records alone.")
        results = self._file(output_path, "results")
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a", encoding="utf-8") as f:
            f.write(json.dumps({"epoch": epoch, "steps": steps, **metrics}) + "\n")
        return results


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


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], confidence_level: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Mean of `a - b` over paired observations (the same questions) with a percentile bootstrap interval.

    Returns:
        `{"difference", "low", "high", "n"}`; `difference` is in the units of `a` and `b`.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"Need two equal-length sequences of at least 2 paired values, got {len(a)} and {len(b)}.")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.all(diff == diff[0]):
        low = high = float(diff[0])
    else:
        result = bootstrap(
            (diff,),
            np.mean,
            confidence_level=confidence_level,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return {"difference": float(diff.mean()), "low": low, "high": high, "n": len(diff)}


def seeded_paired_bootstrap(
    runs_a: Sequence[Sequence[float]],
    runs_b: Sequence[Sequence[float]],
    confidence_level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Mean difference between two retrievers' per-question values, where each may come from several training runs
    (seeds), with a two-level percentile bootstrap interval that covers the variance between runs as well as between
    questions.

    Each resample draws as many runs of each side as it has, with replacement, then the questions, with replacement,
    and takes the difference of the drawn runs' mean values on the drawn questions. With one run per side this is a
    paired bootstrap over questions, as [`paired_bootstrap`] (its interval differs by resampling noise only). A side
    without training variance (bm25s, the initial retriever) is given as one run.

    Args:
        runs_a, runs_b: `[runs, questions]` values, every run on the same questions in the same order.

    Returns:
        `{"difference", "low", "high", "n", "runs_a", "runs_b"}`; `difference` is the mean over runs, in the units
        of the values.
    """
    lengths = [[len(run) for run in runs] for runs in (runs_a, runs_b)]
    if not all(lengths) or len({n for side in lengths for n in side}) != 1 or lengths[0][0] < 2:
        raise ValueError(
            "Need at least one run per side, every run with values for the same questions (at least 2); got runs of "
            f"{lengths[0]} and {lengths[1]} values."
        )
    a, b = np.asarray(runs_a, dtype=float), np.asarray(runs_b, dtype=float)
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    questions = rng.integers(0, n, size=(n_resamples, n))

    def drawn_mean(runs: np.ndarray) -> np.ndarray:
        picks = rng.integers(0, len(runs), size=(n_resamples, len(runs)))
        return np.mean([runs[picks[:, [j]], questions].mean(axis=1) for j in range(len(runs))], axis=0)

    resampled = drawn_mean(a) - drawn_mean(b)
    alpha = (1 - confidence_level) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return {
        "difference": float(a.mean() - b.mean()),
        "low": float(low),
        "high": float(high),
        "n": n,
        "runs_a": len(a),
        "runs_b": len(b),
    }


def _metric_value(record: dict, metric: str) -> float:
    """A per-question metric of one result record: `correct@n`, or `recall@k` from `first_answer_rank`."""
    if metric.startswith("recall@"):
        rank = record["first_answer_rank"]
        return float(rank is not None and rank < int(metric.split("@")[1]))
    return float(record[metric])


def _aligned(records: Sequence[dict], ids: list, what: str) -> list[dict]:
    """`records` in the order of `ids`, refused unless they cover exactly those questions."""
    by_id = {r["id"]: r for r in records}
    missing = [i for i in ids if i not in by_id]
    if missing or len(by_id) != len(ids):
        raise ValueError(
            f"{what} cover other questions than the first result set (e.g. {missing[:3]}): evaluate all on the same."
        )
    return [by_id[i] for i in ids]


def compare_predictions(
    records_a: Sequence[dict], records_b: Sequence[dict], metric: str = "correct@1", **kwargs
) -> dict[str, float]:
    """[`paired_bootstrap`] of a per-question metric (`correct@n`, or `recall@k` computed from
    `first_answer_rank`) between two retrievers' results on the same questions, matched by id."""
    ids = [r["id"] for r in records_a]
    records_b = _aligned(records_b, ids, "The second result set's records")
    return paired_bootstrap(
        [_metric_value(r, metric) for r in records_a], [_metric_value(r, metric) for r in records_b], **kwargs
    )


def compare_predictions_across_seeds(
    runs_a: Sequence[Sequence[dict]], runs_b: Sequence[Sequence[dict]], metric: str = "correct@1", **kwargs
) -> dict[str, float]:
    """[`seeded_paired_bootstrap`] of a per-question metric (as [`compare_predictions`]) between two retrievers,
    each given as the results of one or more training runs (seeds) on the same questions, matched by id."""
    if not runs_a or not runs_b:
        raise ValueError("Give at least one run's results for each retriever.")
    ids = [r["id"] for r in runs_a[0]]
    values = [
        [[_metric_value(r, metric) for r in _aligned(run, ids, "Some runs' results")] for run in runs]
        for runs in (runs_a, runs_b)
    ]
    return seeded_paired_bootstrap(*values, **kwargs)
