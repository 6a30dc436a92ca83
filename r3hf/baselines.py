"""Baseline retrievers with the same `retrieve` protocol as [`SIDRModel`], for side-by-side evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .index import CSRIndex, SearchResults
from .utils import plain_passage_text


class BM25Retriever:
    """bm25s over an index's corpus (title + text, English stopwords): the lexical baseline users try first.

    Args:
        index: The index whose corpus to search; results are row ids of that corpus, as for a [`SIDRModel`].
        stopwords: bm25s stopword list.
    """

    def __init__(self, index: CSRIndex, stopwords: str = "en"):
        import bm25s

        self._bm25s = bm25s
        self.index = index
        self.stopwords = stopwords
        self.bm25 = bm25s.BM25()
        texts = [
            plain_passage_text(p)
            for p in index.corpus.select_columns([c for c in ("title", "text") if c in index.corpus.column_names])
        ]
        self.bm25.index(bm25s.tokenize(texts, stopwords=stopwords, show_progress=False), show_progress=False)

    def retrieve(
        self, queries: Sequence[str] | str, index: CSRIndex | None = None, k: int = 10, **kwargs
    ) -> SearchResults:
        """The top-`k` passages of each query by BM25, best first.

        Args:
            queries: Query strings.
            index: The index the retriever was built on (accepted for the shared protocol; another one is refused).
            k: Passages per query.
            **kwargs: Arguments of other retrievers' `retrieve` (`rerank_top_m`, `batch_size`), ignored.
        """
        if index is not None and index is not self.index:
            raise ValueError("This BM25Retriever was built on another index: build one with BM25Retriever(index).")
        queries = [queries] if isinstance(queries, str) else list(queries)
        tokens = self._bm25s.tokenize(queries, stopwords=self.stopwords, show_progress=False)
        ids, scores = self.bm25.retrieve(tokens, k=min(k, len(self.index)), show_progress=False)
        return SearchResults(ids=torch.from_numpy(ids.astype("int64")), scores=torch.from_numpy(scores).float())
