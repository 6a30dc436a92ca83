"""Reinforced contrastive learning: symmetric in-batch InfoNCE over parametric and semi-parametric scores."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _AllGather(torch.autograd.Function):
    """all_gather whose backward sums each slice's gradient over processes and returns this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.size = dist.get_rank(), tensor.shape[0]
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor)
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor across processes along dim 0, keeping the autograd graph (identity when not distributed).

    Every process must pass the same shape; gradients flow back to each process's own slice.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _AllGather.apply(tensor.contiguous())


def symmetric_infonce(
    queries: torch.Tensor,
    passages: torch.Tensor,
    valid: torch.Tensor | None = None,
    passage_valid: torch.Tensor | None = None,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE, as SiDR's `symmetry_biencoder_nll_loss`.

    Args:
        queries: `[N, V]`; query `i`'s positive is passage `i`.
        passages: `[M, V]` with `M >= N`: the `N` positives first, then extra (hard negative) passages.
        valid: `[N]` booleans; an invalid query does not count, and its positive does not compete.
        passage_valid: `[M]` booleans masking passages out of the candidates (default: the positives of valid
            queries and every extra passage).
        temperature: Divides the raw dot products.
        bias: `[N, M]` constant added to the scaled scores of both directions ([`bm25_residual_bias`]).

    Returns:
        The mean cross-entropy of picking each query's positive among all passages, plus the mean cross-entropy of
        picking each positive's query among all queries.
    """
    n = queries.shape[0]
    valid = torch.ones(n, dtype=torch.bool, device=queries.device) if valid is None else valid.bool()
    scores = queries @ passages.T / temperature  # [N, M]
    if passage_valid is None:
        passage_valid = torch.cat([valid, valid.new_ones(passages.shape[0] - n)])
    if bias is not None:
        scores = scores + bias
    masked = scores.masked_fill(~passage_valid[None, :], float("-inf"))
    target = torch.arange(n, device=queries.device)
    loss_q = F.cross_entropy(masked[valid], target[valid])
    per_passage = scores[:, :n].T.masked_fill(~valid[None, :], float("-inf"))  # [N passages, N queries]
    loss_p = F.cross_entropy(per_passage[valid], target[valid])
    return loss_q + loss_p


def bm25_residual_bias(
    scores: torch.Tensor, bm25_scores: torch.Tensor, weight: float, passage_valid: torch.Tensor | None = None
) -> torch.Tensor:
    """The bm25s term of a fused score, as a constant to add to `[N, M]` in-batch scores: `weight` × each query's
    BM25 scores z-scored over the batch's passages × the standard deviation of its own `scores` over them.

    In the loss this is the hybrid pipeline's ranking rather than E(q)·E(d) alone: where bm25s already ranks the
    positive above the negatives, the term does most of the work and the gradient is small; where bm25s prefers a
    negative, the dense score has to beat it. The retriever learns what bm25s misses, as CLEAR's residual (Gao et al.,
    2021), instead of what it already ranks well. `weight` is bm25s's weight relative to the dense score's; the
    weighted fusion's dense weight `w` corresponds to `(1 - w) / w`.

    Args:
        scores: `[N, M]` query-passage scores (detached here: the scale is a constant).
        bm25_scores: `[N, M]` BM25 scores of the same pairs.
        weight: bm25s's weight; 0 gives no bias.
        passage_valid: `[M]` booleans: the passages the statistics are taken over (default: all).
    """
    columns = slice(None) if passage_valid is None else passage_valid.bool()
    bm25_scores = bm25_scores.to(scores)
    dense, lexical = scores.detach()[:, columns], bm25_scores[:, columns]
    z = (bm25_scores - lexical.mean(1, keepdim=True)) / lexical.std(1, keepdim=True).clamp_min(1e-6)
    return weight * dense.std(1, keepdim=True).nan_to_num(0.0) * z.nan_to_num(0.0)


def flops(embeds: torch.Tensor) -> torch.Tensor:
    """SPLADE's FLOPS regulariser: the sum over vocabulary dimensions of the squared mean activation in the batch,
    a smooth proxy of the number of multiplications a search with these embeddings costs."""
    return (embeds.abs().mean(dim=0) ** 2).sum()


def rcl_loss(
    query_embeds: torch.Tensor,
    query_bag_of_tokens: torch.Tensor,
    passage_embeds: torch.Tensor,
    passage_bag_of_tokens: torch.Tensor,
    valid: torch.Tensor | None = None,
    parametric_weight: float = 1.0,
    semi_parametric_weight: float = 0.5,
    temperature: float = 1.0,
    bm25_scores: torch.Tensor | None = None,
    bm25_residual_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """R3's loss: L(E(q),E(d)) + ½·L(E(q),T(d)) + ½·L(T(q),E(d)), each a [`symmetric_infonce`].

    Args:
        query_embeds, query_bag_of_tokens: E(q) and T(q), `[N, V]`.
        passage_embeds, passage_bag_of_tokens: E(d) and T(d), `[M, V]`: `N` positives, then hard negatives.
        valid: `[N]`; queries without a positive are masked out, and so are their passages when `M == 2N`
            (one hard negative per query, in query order).
        parametric_weight: Weight of L(E(q),E(d)).
        semi_parametric_weight: Weight of each of L(E(q),T(d)) and L(T(q),E(d)).
        temperature: Divides every score.
        bm25_scores: `[N, M]` BM25 scores of the query-passage pairs, for `bm25_residual_weight`.
        bm25_residual_weight: With `bm25_scores`, L(E(q),E(d)) ranks by the fused score E(q)·E(d) + the
            [`bm25_residual_bias`] of this weight; 0 (the paper's loss) adds nothing.

    Returns:
        The total loss and its parts: `{"qd": L(E(q),E(d)), "qT": L(E(q),T(d)), "Td": L(T(q),E(d))}`.
    """
    passage_valid = None
    if valid is not None:
        valid = valid.bool()
        n, m = query_embeds.shape[0], passage_embeds.shape[0]
        passage_valid = torch.cat([valid, valid if m == 2 * n else valid.new_ones(m - n)])
    args = (valid, passage_valid, temperature)
    bias = None
    if bm25_scores is not None and bm25_residual_weight:
        with torch.no_grad():
            scores = query_embeds @ passage_embeds.T / temperature
        bias = bm25_residual_bias(scores, bm25_scores, bm25_residual_weight, passage_valid)
    parts = {
        "qd": symmetric_infonce(query_embeds, passage_embeds, *args, bias=bias),
        "qT": symmetric_infonce(query_embeds, passage_bag_of_tokens, *args),
        "Td": symmetric_infonce(query_bag_of_tokens, passage_embeds, *args),
    }
    total = parametric_weight * parts["qd"] + semi_parametric_weight * (parts["qT"] + parts["Td"])
    return total, parts
