"""Paired comparisons of two retrievers question by question: bootstrap intervals, across training seeds too."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import bootstrap


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
