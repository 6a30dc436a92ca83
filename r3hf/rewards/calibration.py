"""Calibration of the reward against real generation (OpenRAG §3.2): generation labels, per-query and global
thresholds, the offline pools of the first stage, and a calibration split across processes that resumes after a crash.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from tqdm.auto import tqdm

from ..evaluation import has_answer
from ..index import BagOfTokensIndex
from ..utils import atomic_path
from .reader import Reader


@dataclass
class Calibration:
    """Offline calibration of the answer-probability proxy against real generation (OpenRAG §3.2).

    Attributes:
        records: One row per (query, passage): `query`, `passage_id`, `score`, `label` (1 if the greedy generation
            contains a gold answer), `generation`.
        thresholds: Per query with both pools non-empty: `max_negative` (best score of a passage whose generation was
            wrong) and `min_positive` (worst score of one whose generation was right).
    """

    records: datasets.Dataset
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: datasets.Dataset | list[dict]) -> Calibration:
        records = records if isinstance(records, datasets.Dataset) else datasets.Dataset.from_list(records)
        if len(records) == 0:
            return cls(records, {})
        # Grouped in Arrow, not row by row in Python: a paper-scale calibration has millions of records.
        table = records.select_columns(["query", "label", "score"]).with_format("arrow")[:]
        positive = pc.not_equal(table["label"], 0)
        best_negative = table.filter(pc.invert(positive)).group_by("query").aggregate([("score", "max")])
        worst_positive = table.filter(positive).group_by("query").aggregate([("score", "min")])
        both = best_negative.join(
            worst_positive, "query", join_type="inner"
        )  # an empty pool: discarded, as in the paper
        thresholds = {
            q: {"max_negative": hi, "min_positive": lo}
            for q, hi, lo in zip(
                both["query"].to_pylist(), both["score_max"].to_pylist(), both["score_min"].to_pylist()
            )
        }
        return cls(records, thresholds)

    def label(self, query: str, score: float) -> float | None:
        """1.0 above the query's best offline negative, 0.0 below its worst offline positive, else None."""
        t = self.thresholds.get(query)
        if t is None:
            return None
        if score > t["max_negative"]:
            return 1.0
        if score < t["min_positive"]:
            return 0.0
        return None

    def global_threshold(self) -> float:
        """The single threshold on the score that best agrees with the generation labels of all records (F1 of the
        positive class, ties to the higher threshold): for `threshold=` when per-query thresholds leave too many
        queries without a label."""
        scores = torch.tensor(self.records["score"], dtype=torch.float64)
        labels = torch.tensor(self.records["label"], dtype=torch.bool)
        if not labels.any():
            raise ValueError("No record has a correct generation: calibrate on more queries or passages.")
        candidates = scores.unique()
        predicted = scores[None, :] >= candidates[:, None]
        tp = (predicted & labels).sum(1).double()
        f1 = 2 * tp / (predicted.sum(1) + labels.sum())
        best = f1.max()
        return candidates[(f1 == best).nonzero().max()].item()

    def answered_within(self, k: int) -> float:
        """The share of calibrated queries that the reader answered correctly from at least one of their first `k`
        passages (in record order: the retriever's). With the reader's top-1 accuracy, this bounds what re-ranking
        those candidates can give: a re-ranker that always put such a passage first would reach it.

        Args:
            k: Passages per query, from its first (`1`: the reader's accuracy with the retriever's top passage).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if len(self.records) == 0:
            raise ValueError("The calibration has no records: calibrate some queries first.")
        return float((self._first_answered_rank < k).mean())

    @functools.cached_property
    def _first_answered_rank(self) -> np.ndarray:
        """Per query, the position among its records of its first correctly answered passage (inf if none), so that
        `answered_within` for every k reads the records once."""
        table = self.records.select_columns(["query", "label"]).to_pandas()
        rank = table.groupby("query", sort=False).cumcount().astype(float).where(table["label"].ne(0), np.inf)
        return rank.groupby(table["query"], sort=False).min().to_numpy()

    def positives(self, query: str) -> list[str]:
        """Passage ids of the query's offline positive pool."""
        table = self.records.select_columns(["query", "label", "passage_id"]).with_format("arrow")[:]
        mask = pc.and_(pc.equal(table["query"], query), pc.not_equal(table["label"], 0))
        return table.filter(mask)["passage_id"].to_pylist()

    def save(self, path: str | os.PathLike) -> None:
        """Write the records as JSON Lines, atomically."""
        with atomic_path(path) as tmp:
            self.records.to_json(str(tmp), lines=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        return cls.from_records(datasets.Dataset.from_json(str(path)))


class OfflinePools:
    """The offline pools of every calibrated question as arrays: the corpus rows of its records, grouped by
    (question, label) in record order, and one `(question, label) -> span` table. Nothing per corpus passage or per
    record lives in Python objects (a paper-scale calibration holds millions of records).

    Args:
        calibration: The [`Calibration`] whose records make the pools (records of passages not in the index are
            dropped).
        index: The index whose rows the pools hold.
    """

    def __init__(self, calibration: Calibration, index: BagOfTokensIndex):
        table = calibration.records.select_columns(["query", "label", "passage_id"]).with_format("arrow")[:]
        rows = index.rows_of(table["passage_id"].to_pylist()) if len(table) else np.zeros(0, dtype=np.int64)
        codes, questions = pd.factorize(table["query"].to_numpy(zero_copy_only=False))
        keys = 2 * codes.astype(np.int64) + (table["label"].to_numpy(zero_copy_only=False) != 0)
        keep = rows >= 0
        order = np.argsort(keys[keep], kind="stable")
        self._rows, sorted_keys = rows[keep][order], keys[keep][order]
        self._bounds = np.searchsorted(sorted_keys, np.arange(2 * len(questions) + 1))
        self._question_code = {q: i for i, q in enumerate(questions)}

    def rows(self, question: str, label: int) -> list[int]:
        """Corpus rows of the question's pool with that label (1: positives, 0: negatives); empty if none."""
        code = self._question_code.get(question)
        if code is None:
            return []
        key = 2 * code + int(bool(label))
        return self._rows[self._bounds[key] : self._bounds[key + 1]].tolist()


def label_by_generation(
    reader: Reader,
    score: Callable[[Sequence[str], Sequence, Sequence[Sequence[str]]], list[float]],
    queries: Sequence[str],
    answers: Sequence[Sequence[str]],
    candidate_passages: Sequence[Sequence[dict]],
    max_new_tokens: int | None = None,
) -> list[dict]:
    """The offline stage's records: generate greedily with each candidate passage, label by answer containment,
    and record the reward's answer-probability score.

    Args:
        reader: The [`Reader`] that generates.
        score: The reward's scorer, `score(queries, passages, answers) -> probabilities` (as
            [`AnswerProbabilityReward.score`]).
        queries: Training questions.
        answers: Their gold aliases.
        candidate_passages: Per question, passages (dicts with an `id`) from the initial retriever.
        max_new_tokens: Generation length (default: the reader's `max_new_tokens`).

    Returns:
        One dict per (query, passage): `query`, `passage_id`, `score`, `label`, `generation`.
    """
    flat_q, flat_p, flat_a = [], [], []
    for q, a, ps in zip(queries, answers, candidate_passages):
        for p in ps:
            flat_q.append(q)
            flat_p.append(p)
            flat_a.append(a)
    if not flat_q:
        raise ValueError("Calibration needs at least one query with candidate passages.")
    generations = reader.generate(flat_q, [[p] for p in flat_p], max_new_tokens=max_new_tokens)
    scores = score(flat_q, flat_p, flat_a)
    return [
        {
            "query": q,
            "passage_id": str(p.get("id", "")) if isinstance(p, dict) else "",
            "score": s,
            "label": int(has_answer(g, a)),
            "generation": g,
        }
        for q, p, a, g, s in zip(flat_q, flat_p, flat_a, generations, scores)
    ]


def _read_records(folder: Path) -> list[dict]:
    """Every complete record of the calibration part files in `folder` (a crash may leave a partial last line)."""
    records = []
    for part in sorted(folder.glob("part-*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def _open_part(path: Path):
    """This process's part file, opened for appending after dropping a partial last line left by a crash."""
    if path.exists():
        data = path.read_bytes()
        path.write_bytes(data[: data.rfind(b"\n") + 1])
    return open(path, "a", encoding="utf-8")


def _check_settings(settings_file: Path, settings: dict | None, what: Path, fix: str) -> None:
    """Refuse labels that `settings_file` says were made with other `settings` (a file without it is not checked)."""
    if settings is None or not settings_file.exists():
        return
    earlier = json.loads(settings_file.read_text(encoding="utf-8"))
    if earlier != settings:
        changed = sorted(k for k in earlier.keys() | settings.keys() if earlier.get(k) != settings.get(k))
        changes = ", ".join(f"{k}: {earlier.get(k)!r} there, {settings.get(k)!r} now" for k in changed)
        raise ValueError(f"{what} was labelled with other settings ({changes}; {settings_file}): {fix}")


def _write_settings(settings_file: Path, settings: dict) -> None:
    with atomic_path(settings_file) as tmp:
        tmp.write_text(json.dumps(settings), encoding="utf-8")


def _check_questions(path: Path, records: datasets.Dataset, questions: Sequence[str]) -> None:
    """Refuse a calibration file whose records are not the labels of exactly `questions`."""
    ours, theirs = set(questions), set(records["query"]) if len(records) else set()
    if ours != theirs:
        raise ValueError(
            f"{path} holds the labels of other questions ({len(theirs - ours)} of its {len(theirs)} questions are not "
            f"among the first {len(ours)} training questions, and it lacks {len(ours - theirs)} of those): delete it "
            f"to label these questions, or set calibration_file to another path."
        )


def calibrate_in_parts(
    label: Callable[[datasets.Dataset, list[list[dict]]], list[dict]],
    candidates: Callable[[list[str]], list[list[dict]]],
    train_dataset: datasets.Dataset,
    path: str | os.PathLike,
    num_questions: int,
    per_question: int,
    state: PartialState | None = None,
    chunk_size: int = 16,
    settings: dict | None = None,
) -> Calibration:
    """Calibrate the first `num_questions` questions of `train_dataset`, split across processes and resumable.

    The questions not yet done are split across processes; each appends the records of every `chunk_size` questions
    to its own part file (`<path>.parts/part-rankN.jsonl`), so a restarted calibration, with any number of
    processes, keeps what was written and does only the rest. The main process then writes `path` once, with
    `settings` beside it (`<path>.settings.json`). A `path` that exists is loaded instead, once its records are
    checked to label exactly these questions and its settings (where it has them) to equal `settings`; a mismatch
    raises a `ValueError` that names the file and leaves it untouched.

    Args:
        label: The records of a batch of question rows and their candidates: generation labels for free-form
            questions (`reward.label_by_generation`), the closed-set rule for closed-set ones
            (`reward.label_closed_set`).
        candidates: The `per_question` candidate passages of each question (dicts with an `id`), from the initial
            retriever.
        train_dataset: Questions with `question` and `answers` columns (and `choices` for a closed-set task).
        path: Where the records are written (JSON Lines).
        num_questions: Questions to calibrate (the first ones of `train_dataset`).
        per_question: Candidates per question; a question with fewer records (cut short by a crash) is redone.
        state: The processes' `accelerate.PartialState` (default: the current one).
        chunk_size: Questions per written batch of records.
        settings: What the labels depend on beyond the questions (the reader, the generation length, the candidates'
            retriever and pipeline, ...), as JSON values; `None` checks none.

    Returns:
        The [`Calibration`] of every record.
    """
    state = state or PartialState()
    path = Path(path)
    settings_file = Path(f"{path}.settings.json")
    if settings is not None:
        settings = json.loads(json.dumps(settings))  # as read back: tuples as lists
    questions = train_dataset.select(range(min(num_questions, len(train_dataset))))["question"]
    if path.exists():
        _check_settings(
            settings_file, settings, path, "delete it to label again, or set calibration_file to another path."
        )
        calibration = Calibration.load(path)
        _check_questions(path, calibration.records, questions)
        return calibration
    parts = Path(f"{path}.parts")
    _check_settings(
        parts / "settings.json", settings, parts, "delete that folder to label from the start with these settings."
    )
    if state.is_main_process:
        parts.mkdir(parents=True, exist_ok=True)
        if settings is not None and not (parts / "settings.json").exists():
            _write_settings(parts / "settings.json", settings)
    state.wait_for_everyone()
    counts = Counter(r["question_index"] for r in _read_records(parts))
    todo = [i for i in range(len(questions)) if counts[i] < per_question]
    with (
        state.split_between_processes(todo) as mine,
        _open_part(parts / f"part-rank{state.process_index}.jsonl") as f,
    ):
        chunks = range(0, len(mine), chunk_size)
        for start in tqdm(chunks, desc="Calibrating", disable=not state.is_main_process):
            rows = train_dataset.select(mine[start : start + chunk_size])
            records = label(rows, candidates(rows["question"]))
            written = time.time_ns()  # a question redone after a crash keeps only its latest records
            for j, record in enumerate(records):
                f.write(json.dumps({"question_index": mine[start + j // per_question], "written": written, **record}))
                f.write("\n")
            f.flush()
            os.fsync(f.fileno())
    state.wait_for_everyone()
    if state.is_main_process:
        all_records = _read_records(parts)
        latest: dict[int, int] = {}
        for r in all_records:
            latest[r["question_index"]] = max(latest.get(r["question_index"], 0), r.get("written", 0))
        records = [
            {k: v for k, v in r.items() if k not in ("question_index", "written")}
            for r in sorted(all_records, key=lambda r: r["question_index"])
            if r.get("written", 0) == latest[r["question_index"]]
        ]
        Calibration.from_records(records).save(path)
        if settings is not None:
            _write_settings(settings_file, settings)
        shutil.rmtree(parts)
    state.wait_for_everyone()
    return Calibration.load(path)
