"""What a search returns: the top-k corpus rows of each query and their scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SearchResults:
    """Top-k results of a batch of queries, best first.

    Attributes:
        ids: `LongTensor[n_queries, k]`, row numbers of the passages in the index's corpus (`index.corpus[i]`).
        scores: `FloatTensor[n_queries, k]`, their inner-product scores.
    """

    ids: torch.Tensor
    scores: torch.Tensor
