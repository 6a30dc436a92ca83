"""What r3hf asks of a retriever and of a reader: anything with these methods can be evaluated or read with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .index import CSRIndex, SearchResults


@runtime_checkable
class RetrieverLike(Protocol):
    """A retriever: [`SIDRModel`] (late-parametric search over an index) and [`BM25Retriever`] are two."""

    def retrieve(self, queries: Sequence[str], index: CSRIndex, k: int = 10, **kwargs) -> SearchResults:
        """The top `k` corpus rows of `index` for each query, best first. Keyword arguments a retriever does not use
        (`rerank_top_m`, `first_stage`, ...) are ignored."""
        ...


@runtime_checkable
class ReaderLike(Protocol):
    """A reader LLM that answers a question from passages in context: [`Reader`] is one."""

    def generate(
        self,
        queries: Sequence[str],
        passages: Sequence[Sequence],
        max_new_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """One greedy answer per query, with its list of passages (strings or `{"title","text"}` dicts) in context."""
        ...
