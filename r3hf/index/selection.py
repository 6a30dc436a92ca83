"""Top-k selection with a fixed tie rule: among equal scores, the lower row or column wins, on any machine."""

from __future__ import annotations

import numpy as np
import torch


def _top_k_lowest_columns(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices (ascending) of the `k` largest scores of each row, ties at the `k`-th place going to the lowest
    columns (`torch.topk` keeps any of them)."""
    kth = scores.topk(k, dim=1).values[:, -1:]
    above, tied = scores > kth, scores == kth
    chosen = above | (tied & (tied.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
    return chosen.nonzero()[:, 1].view(len(scores), k)


def _top_k_lowest_ids(scores: np.ndarray, k: int, stride: int = 16) -> np.ndarray:
    """Positions of the `k` largest scores, best first, lower position first among equal scores.

    A threshold from every `stride`-th score narrows the candidates in one pass: the sample's `2k/stride + 8`-th
    largest, so that it leaves more than `k` candidates all but always (about `2k + 8 * stride` expected); the full
    top-k runs only when it leaves fewer.
    """
    if k >= len(scores):
        candidates = np.arange(len(scores))
    else:
        sample = scores[::stride]
        kth = _kth_largest(sample, min(len(sample), 2 * -(-k // stride) + 8))
        candidates = np.flatnonzero(scores >= kth)
        if len(candidates) < k:
            candidates = np.flatnonzero(scores >= _kth_largest(scores, k))
        elif len(candidates) > 4 * k:
            candidates = candidates[scores[candidates] >= _kth_largest(scores[candidates], k)]
    return candidates[np.lexsort((candidates, -scores[candidates]))[:k]]


def _kth_largest(values: np.ndarray, k: int) -> float:
    return torch.from_numpy(np.ascontiguousarray(values)).topk(k, sorted=False).values.min().item()
