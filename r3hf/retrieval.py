"""Late-parametric retrieval: candidates from a fixed first stage (the bag-of-tokens index by E(q)·T(d), bm25s, or the
union of both), then a re-rank with fresh E(d), optionally fused with bm25s's ranking."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from .index import BagOfTokensIndex, CSRIndex, SearchResults

FIRST_STAGES = ("bag_of_tokens", "bm25", "hybrid")
FUSIONS = ("none", "rrf", "weighted", "score")
RRF_K = 60  # the constant of Cormack et al.'s reciprocal rank fusion


def check_first_stage(first_stage: str, fusion: str = "none", fusion_weight: float = 0.5) -> None:
    """Refuse an unknown first stage or fusion, a fusion without bm25s scores, or a weight outside [0, 1]."""
    if first_stage not in FIRST_STAGES:
        raise ValueError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}.")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
    if fusion != "none" and first_stage == "bag_of_tokens":
        raise ValueError(
            f"fusion={fusion!r} combines E(q)·E(d) with bm25s's ranking or scores: use first_stage='bm25' or 'hybrid'."
        )
    if not 0.0 <= fusion_weight <= 1.0:
        raise ValueError(f"fusion_weight must lie in [0, 1], got {fusion_weight}.")


def first_stage_candidates(
    index: BagOfTokensIndex,
    queries: Sequence[str],
    query_embeds: torch.Tensor,
    m: int,
    first_stage: str = "bag_of_tokens",
    query_cut: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The candidates of each query from the fixed first stage: the top `m` by E(q)·T(d) (`"bag_of_tokens"`), by
    BM25 (`"bm25"`), or the union of both lists (`"hybrid"`: bag-of-tokens order, then bm25s's passages not already
    in it).

    Returns:
        `(rows, bm25_ranks, bm25_scores)`, each `[n, w]` (`w` = `m`, or up to `2m` for the hybrid union, `-1`
        padding rows where a query has fewer): `LongTensor` corpus rows, each candidate's 1-based `LongTensor` rank
        in bm25s's top `m`, and its `FloatTensor` BM25 score there (both `0` when it is not in that top `m`).
    """
    m = min(m, len(index))
    if first_stage == "bag_of_tokens":
        rows = index.search(query_embeds, k=m, query_cut=query_cut).rows.cpu()
        return rows, torch.zeros_like(rows), torch.zeros(rows.shape)
    bm25_rows, bm25_scores = index.require_bm25().search(list(queries), k=m)
    ranks = torch.arange(1, bm25_rows.shape[1] + 1).expand_as(bm25_rows)
    if first_stage == "bm25":
        return bm25_rows, ranks.clone(), bm25_scores
    return merge_candidates(
        index.search(query_embeds, k=m, query_cut=query_cut).rows.cpu().tolist(), bm25_rows, bm25_scores
    )


def merge_candidates(
    lexical: Sequence[Sequence[int]], bm25_rows: torch.Tensor, bm25_scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The hybrid first stage's candidates: per query its bag-of-tokens rows, then bm25s's rows not already among
    them, with each candidate's 1-based bm25s rank and BM25 score (0 outside bm25s's list); `-1` pads the rows, as
    [`first_stage_candidates`] returns them. A `-1` in either list (a shorter one's padding) is no candidate."""
    merged = [[r for r in dict.fromkeys([*a, *b]) if r >= 0] for a, b in zip(lexical, bm25_rows.tolist())]
    width = max(len(row) for row in merged)
    rows = torch.full((len(merged), width), -1, dtype=torch.long)
    bm25_ranks = torch.zeros_like(rows)
    for i, (row, bm25_row) in enumerate(zip(merged, bm25_rows.tolist())):
        rows[i, : len(row)] = torch.tensor(row)
        rank_of = {r: j + 1 for j, r in enumerate(bm25_row)}
        bm25_ranks[i, : len(row)] = torch.tensor([rank_of.get(r, 0) for r in row])
    # each candidate's score is bm25s's at its rank
    scores = bm25_scores.gather(1, (bm25_ranks - 1).clamp_min(0))
    return rows, bm25_ranks, torch.where(bm25_ranks > 0, scores, 0.0)


def fuse(
    dense: torch.Tensor,
    bm25_ranks: torch.Tensor | None,
    fusion: str,
    fusion_weight: float,
    bm25_scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Final scores of `[n, w]` candidates from their E(q)·E(d) scores (`-inf` on padding) and bm25s ranks (or, for
    `"score"`, bm25s scores), as [`first_stage_candidates`] gives them.

    `"none"`: E(q)·E(d). `"rrf"`: Σ 1 / (60 + rank) over the dense ranking and bm25s's (a passage outside bm25s's
    top-m adds nothing for it). `"weighted"`: `fusion_weight` × the dense score min-max scaled over the query's
    candidates + (1 − `fusion_weight`) × (m + 1 − bm25 rank) / m (0 outside bm25s's top-m). `"score"`: the same
    convex combination on scores (Bruch et al., 2023, "An Analysis of Fusion Functions for Hybrid Retrieval"): the
    min-max scaled dense score, and the BM25 score divided by the query's best (0, BM25's own floor, outside bm25s's
    top-m), so that the size of bm25s's lead counts, not only its order.
    """
    if fusion == "none":
        return dense
    if bm25_ranks is None:
        raise ValueError(
            f"fusion={fusion!r} needs the candidates' bm25s ranks: pass bm25_ranks= (and bm25_scores= for 'score') "
            "from first_stage_candidates, or fusion='none'."
        )
    valid = torch.isfinite(dense)
    in_bm25 = bm25_ranks > 0
    if fusion == "rrf":
        order = dense.argsort(dim=1, descending=True, stable=True)
        dense_rank = torch.empty_like(order).scatter_(1, order, torch.arange(1, dense.shape[1] + 1).expand_as(order))
        scores = 1.0 / (RRF_K + dense_rank.float()) + torch.where(in_bm25, 1.0 / (RRF_K + bm25_ranks.float()), 0.0)
        return torch.where(valid, scores, -torch.inf)
    low = torch.where(valid, dense, torch.inf).min(dim=1, keepdim=True).values
    high = torch.where(valid, dense, -torch.inf).max(dim=1, keepdim=True).values
    scaled = (dense - low) / (high - low).clamp_min(1e-12)
    if fusion == "weighted":
        m = bm25_ranks.max(dim=1, keepdim=True).values.clamp_min(1).float()
        lexical = torch.where(in_bm25, (m + 1 - bm25_ranks.float()) / m, 0.0)
    else:
        if bm25_scores is None:
            raise ValueError(
                "fusion='score' needs the candidates' BM25 scores: pass bm25_scores= (from first_stage_candidates)."
            )
        best = bm25_scores.max(dim=1, keepdim=True).values.clamp_min(1e-12)
        lexical = torch.where(in_bm25, bm25_scores / best, 0.0)
    scores = fusion_weight * scaled + (1 - fusion_weight) * lexical
    return torch.where(valid, scores, -torch.inf)


@contextmanager
def cached_passage_embeddings(model) -> Iterator[None]:
    """Within the block, late-parametric search embeds each corpus row at most once with `model` (kept sparse), so
    that evaluating the same weights in several pipelines (first stages, fusions) pays for each passage once. The
    weights must not change inside the block: use it for evaluation, never around training."""
    model._r3hf_passage_cache = {}
    try:
        yield
    finally:
        del model._r3hf_passage_cache


def _passage_embeddings(model, index: CSRIndex, rows: list[int], batch_size: int) -> torch.Tensor:
    """Dense E(d) of corpus rows, through the [`cached_passage_embeddings`] cache when one is active."""
    cache = getattr(model, "_r3hf_passage_cache", None)
    missing = rows if cache is None else [r for r in rows if r not in cache]
    embeds = None
    if missing:
        embeds = model.encode_document(
            index.get_passages(missing), batch_size=batch_size, show_progress_bar=False, convert_to_sparse_tensor=False
        )
    if cache is None:
        return embeds
    if missing:
        cache.update(zip(missing, embeds.cpu().to_sparse().unbind(0)))
    return torch.stack([cache[r].to_dense() for r in rows])


def candidate_scores(
    model, query_embeds: torch.Tensor, rows: torch.Tensor, index: CSRIndex, batch_size: int = 32
) -> torch.Tensor:
    """`[n, w]` E(q)·E(d) scores of candidate rows (`-1`: padding, scored `-inf`), embedding each distinct candidate
    once with the current passage encoder."""
    rows = rows.cpu()
    unique, inverse = rows.clamp_min(0).unique(return_inverse=True)
    passage_embeds = _passage_embeddings(model, index, unique.tolist(), batch_size)
    scores = query_embeds.to(passage_embeds.device) @ passage_embeds.T  # [n, u]
    dense = scores.gather(1, inverse.to(scores.device)).cpu()
    return torch.where(rows >= 0, dense, -torch.inf)


def rerank(
    model,
    query_embeds: torch.Tensor,
    candidates: SearchResults | torch.Tensor,
    index: CSRIndex,
    k: int,
    batch_size: int = 32,
    bm25_ranks: torch.Tensor | None = None,
    fusion: str = "none",
    fusion_weight: float = 0.5,
    bm25_scores: torch.Tensor | None = None,
) -> SearchResults:
    """Re-rank candidate passages by E(q)·E(d), embedding each distinct candidate once with the current passage
    encoder, optionally [`fuse`]d with bm25s's ranking, and keep the top `k` of each query.

    Args:
        candidates: `[n, w]` corpus rows (or [`SearchResults`] holding them); `-1` marks padding.
        bm25_ranks: `[n, w]` 1-based bm25s ranks of the candidates (`0`: not in its list), for a fusion.
        bm25_scores: `[n, w]` their BM25 scores (`0`: not in its list), for a `"score"` fusion.
    """
    rows = (candidates.rows if isinstance(candidates, SearchResults) else candidates).cpu()
    dense = candidate_scores(model, query_embeds, rows, index, batch_size)
    final = fuse(dense, bm25_ranks, fusion, fusion_weight, bm25_scores)
    return top_k(final, rows, k)


def top_k(final: torch.Tensor, rows: torch.Tensor, k: int) -> SearchResults:
    """The `k` best of `[n, w]` candidate rows (`-1`: padding) by their final scores, the earlier candidate first
    on a tie; `k` is cut to the fewest candidates any query has."""
    k = min(k, int((rows >= 0).sum(dim=1).min()))
    order = final.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return SearchResults(rows=rows.gather(1, order), scores=final.gather(1, order))


def retrieve(
    model,
    queries: Sequence[str] | str,
    index: CSRIndex,
    k: int = 10,
    rerank_top_m: int = 100,
    batch_size: int = 32,
    query_embeds: torch.Tensor | None = None,
    first_stage: str = "bag_of_tokens",
    fusion: str = "none",
    fusion_weight: float = 0.5,
    query_cut: int | None = None,
) -> SearchResults:
    """Retrieve the top-`k` passages of each query with the model's current weights.

    On a [`BagOfTokensIndex`], the candidates of a fixed first stage ([`first_stage_candidates`]: the top
    `rerank_top_m` by E(q)·T(d), by bm25s, or their union) are embedded on the fly and re-ranked by E(q)·E(d)
    (late-parametric search), optionally fused with bm25s's ranking; on a parametric index, a plain E(q)·E(d) search.
    Neither first stage depends on the model's weights, so neither goes stale while the model trains.

    Args:
        model: A [`SIDRModel`].
        queries: Query strings.
        index: A [`BagOfTokensIndex`] (with a BM25 part, [`~CSRIndex.add_bm25`], for `"bm25"` and `"hybrid"`) or a
            [`SparseEmbeddingIndex`], built with the model's tokenizer.
        k: Passages returned per query.
        rerank_top_m: Candidates per query from each first stage (bag-of-tokens index only); at least `k`.
        batch_size: Encoding batch size.
        query_embeds: Precomputed E(q), to skip encoding the queries again.
        first_stage: `"bag_of_tokens"` (the paper's), `"bm25"` or `"hybrid"`.
        fusion: The final ranking: `"none"` (E(q)·E(d)), `"rrf"`, `"weighted"` or `"score"` (see [`fuse`]; bm25
            and hybrid first stages only).
        fusion_weight: Weight of the dense score in a `"weighted"` or `"score"` fusion; choose it on a dev split.
        query_cut: Bag-of-tokens candidates from E(q)'s `query_cut` largest terms only, each scored with the whole
            E(q) ([`CSRIndex.search`]); `None`: the exact top `rerank_top_m`.

    Returns:
        [`SearchResults`] with corpus row ids and scores (E(q)·E(d), or the fused scores), best first.
    """
    check_first_stage(first_stage, fusion, fusion_weight)
    if index.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"The index has {index.vocab_size} dimensions but the model {model.config.vocab_size}: "
            "build the index with the model's tokenizer."
        )
    queries = [queries] if isinstance(queries, str) else list(queries)
    if query_embeds is None:
        query_embeds = model.encode_query(queries, batch_size=batch_size, convert_to_sparse_tensor=False)
    if not isinstance(index, BagOfTokensIndex):
        return index.search(query_embeds, k=k)
    if rerank_top_m < k:
        raise ValueError(f"rerank_top_m ({rerank_top_m}) must be at least k ({k}).")
    rows, bm25_ranks, bm25_scores = first_stage_candidates(
        index, queries, query_embeds, rerank_top_m, first_stage, query_cut
    )
    return rerank(
        model,
        query_embeds,
        rows,
        index,
        k,
        batch_size=batch_size,
        bm25_ranks=bm25_ranks,
        fusion=fusion,
        fusion_weight=fusion_weight,
        bm25_scores=bm25_scores,
    )
