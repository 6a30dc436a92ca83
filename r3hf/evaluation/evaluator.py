"""[`RAGEvaluator`]: answer recall@k and RAG accuracy of any retriever with a reader LLM, question by question; the
trainer, the evaluation script and the demo share it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from transformers.utils import logging

from ..closed_set import matched_choice
from ..integrations.sparse_encoder_retriever import as_retriever
from ..protocols import ReaderLike, RetrieverLike
from ..retrieval import check_first_stage
from ..utils import atomic_write_text
from .answers import first_answer_rank, has_answer

logger = logging.get_logger(__name__)


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
