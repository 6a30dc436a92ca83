"""Late-parametric retrieval: E(q)·T(d) over the fixed bag-of-tokens index, then a re-rank with fresh E(d)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .index import BagOfTokensIndex, CSRIndex, SearchResults


def rerank(
    model, query_embeds: torch.Tensor, candidates: SearchResults, index: CSRIndex, k: int, batch_size: int = 32
) -> SearchResults:
    """Re-rank candidate passages by E(q)·E(d), embedding each distinct candidate once with the current passage
    encoder, and keep the top `k` of each query."""
    unique, inverse = candidates.ids.unique(return_inverse=True)
    passages = index.get_passages(unique.tolist())
    passage_embeds = model.encode_document(
        passages, batch_size=batch_size, show_progress_bar=False, convert_to_sparse_tensor=False
    )
    scores = query_embeds.to(passage_embeds.device) @ passage_embeds.T  # [n, u]
    scores = scores.gather(1, inverse.to(scores.device))  # [n, m]
    order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
    ids = candidates.ids.to(scores.device).gather(1, order)
    return SearchResults(ids=ids, scores=scores.gather(1, order))


def retrieve(
    model,
    queries: Sequence[str] | str,
    index: CSRIndex,
    k: int = 10,
    rerank_top_m: int = 100,
    batch_size: int = 32,
    query_embeds: torch.Tensor | None = None,
) -> SearchResults:
    """Retrieve the top-`k` passages of each query with the model's current weights.

    On a [`BagOfTokensIndex`], the top `rerank_top_m` passages by E(q)·T(d) are embedded on the fly and re-ranked by
    E(q)·E(d) (late-parametric search); on a parametric index, a plain E(q)·E(d) search.

    Args:
        model: A [`SIDRModel`].
        queries: Query strings.
        index: A [`BagOfTokensIndex`] or [`SparseEmbeddingIndex`] built with the model's tokenizer.
        k: Passages returned per query.
        rerank_top_m: Candidates re-ranked per query (bag-of-tokens index only); must be at least `k`.
        batch_size: Encoding batch size.
        query_embeds: Precomputed E(q), to skip encoding the queries again.

    Returns:
        [`SearchResults`] with corpus row ids and scores, best first.
    """
    if index.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"The index has {index.vocab_size} dimensions but the model {model.config.vocab_size}: "
            "build the index with the model's tokenizer."
        )
    if query_embeds is None:
        query_embeds = model.encode_query(queries, batch_size=batch_size, convert_to_sparse_tensor=False)
    if not isinstance(index, BagOfTokensIndex):
        return index.search(query_embeds, k=k)
    if rerank_top_m < k:
        raise ValueError(f"rerank_top_m ({rerank_top_m}) must be at least k ({k}).")
    candidates = index.search(query_embeds, k=rerank_top_m)
    return rerank(model, query_embeds, candidates, index, k, batch_size=batch_size)
