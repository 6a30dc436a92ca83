"""The RCL loss: symmetric InfoNCE against hand-computed values, term weights and masking, and gradients."""

import pytest
import torch

from r3hf.losses import bm25_residual_bias, rcl_loss, symmetric_infonce
from tests.testing_utils import make_tiny_sidr


def test_symmetric_infonce_against_a_hand_computed_value():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])  # 2 positives, then 2 negatives
    s = q @ d.T  # [[1,0,1,0],[0,2,2,0]]
    lq = (-(s[0, 0] - s[0].logsumexp(0)) - (s[1, 1] - s[1].logsumexp(0))) / 2
    sp = s[:, :2].T  # passage i against the queries
    lp = (-(sp[0, 0] - sp[0].logsumexp(0)) - (sp[1, 1] - sp[1].logsumexp(0))) / 2
    assert symmetric_infonce(q, d).item() == pytest.approx((lq + lp).item(), rel=1e-6)
    # By hand: queries (-1 + ln(2e + 2) - 2 + ln(2 + 2e^2)) / 2, passages (-1 + ln(e + 1) - 2 + ln(1 + e^2)) / 2.
    assert symmetric_infonce(q, d).item() == pytest.approx(0.913240 + 0.220095, abs=1e-5)


def random_batch(n: int, m: int, dims: int = 5) -> tuple[torch.Tensor, ...]:
    """E(q), T(q), E(d), T(d) of `n` queries and `m` passages, seeded."""
    torch.manual_seed(0)
    return (
        torch.rand(n, dims),
        (torch.rand(n, dims) > 0.5).float(),
        torch.rand(m, dims),
        (torch.rand(m, dims) > 0.5).float(),
    )


def test_rcl_loss_weights_and_masking():
    q, qb, d, db = random_batch(3, 6)
    total, parts = rcl_loss(q, qb, d, db)
    assert total.item() == pytest.approx((parts["qd"] + 0.5 * parts["qT"] + 0.5 * parts["Td"]).item())
    assert parts["qT"].item() == pytest.approx(symmetric_infonce(q, db).item())
    valid = torch.tensor([True, False, True])
    masked, _ = rcl_loss(q, qb, d, db, valid=valid)
    keep = [0, 2]
    expected, _ = rcl_loss(q[keep], qb[keep], d[[0, 2, 3, 5]], db[[0, 2, 3, 5]])
    assert masked.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_both_encoders_and_all_terms(bert_tokenizer):
    # No sparsification: a random model's top-k dimensions of two texts rarely overlap, which zeroes every score.
    tiny_sidr = make_tiny_sidr(bert_tokenizer, max_active_dims=len(bert_tokenizer))
    q = tiny_sidr.tokenize(["who wrote hamlet", "capital of france"], "query")
    d = tiny_sidr.tokenize(["hamlet shakespeare", "paris france", "nile river", "moon"], "passage")
    tiny_sidr.train()
    out = tiny_sidr(
        query_input_ids=q["input_ids"],
        query_attention_mask=q["attention_mask"],
        passage_input_ids=d["input_ids"],
        passage_attention_mask=d["attention_mask"],
    )
    for term in ("qd", "qT", "Td"):
        tiny_sidr.zero_grad()
        _, parts = rcl_loss(out.query_embeds, out.query_bag_of_tokens, out.passage_embeds, out.passage_bag_of_tokens)
        parts[term].backward(retain_graph=True)
        q_grad = sum(p.grad.abs().sum() for p in tiny_sidr.query_encoder.parameters() if p.grad is not None)
        p_grad = sum(p.grad.abs().sum() for p in tiny_sidr.passage_encoder.parameters() if p.grad is not None)
        assert (q_grad > 0) == (term != "Td") and (p_grad > 0) == (term != "qT"), term


def test_bm25_residual_bias_by_hand_and_in_the_loss():
    scores = torch.tensor([[4.0, 0.0, 2.0, 2.0], [1.0, 3.0, 1.0, 3.0]])
    bm25 = torch.tensor([[1.0, 3.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]])
    bias = bm25_residual_bias(scores, bm25, 0.5)
    # Row 0: BM25 mean 2, std (unbiased) 2/sqrt(3); dense std 2*sqrt(2/3). Row 1: BM25 says nothing, no bias.
    z = (bm25[0] - 2) / (2 / 3**0.5)
    assert torch.allclose(bias[0], 0.5 * 2 * (2 / 3) ** 0.5 * z) and torch.equal(bias[1], torch.zeros(4))
    only = torch.tensor([True, True, False, False])  # statistics over the first two passages alone
    assert torch.allclose(bm25_residual_bias(scores, bm25, 1.0, only)[0], 4 / 2**0.5 * (bm25[0] - 2) / 2**0.5)

    q, qb, d, db = random_batch(2, 4)
    plain, parts = rcl_loss(q, qb, d, db)
    assert rcl_loss(q, qb, d, db, bm25_scores=bm25, bm25_residual_weight=0.0)[0].item() == plain.item()
    fused, fused_parts = rcl_loss(q, qb, d, db, bm25_scores=bm25, bm25_residual_weight=2.0)
    expected = symmetric_infonce(q, d, bias=bm25_residual_bias(q @ d.T, bm25, 2.0))
    assert (
        fused_parts["qd"].item() == pytest.approx(expected.item()) and fused_parts["qd"].item() != parts["qd"].item()
    )
    assert fused_parts["qT"].item() == parts["qT"].item()  # the bag-of-tokens terms stay the paper's
    # Where bm25s ranks each query's positive first, the fused loss is lower than the dense one alone.
    agree = torch.eye(2, 4) * 10
    assert rcl_loss(q, qb, d, db, bm25_scores=agree, bm25_residual_weight=1.0)[1]["qd"] < parts["qd"]
