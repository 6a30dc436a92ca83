"""What a search returns: the top-k corpus rows of each query and their scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SearchResults:
    """Top-k results of a batch of queries, best first.

    Attributes:
        rows: `LongTensor[n_queries, k]`, row numbers of the passages in the index's corpus (`index.corpus[i]`, or
            `index.get_passages(rows)`); a passage's own id is its corpus row's `id` column.
        scores: `FloatTensor[n_queries, k]`, their inner-product scores.
    """

    rows: torch.Tensor
    scores: torch.Tensor
