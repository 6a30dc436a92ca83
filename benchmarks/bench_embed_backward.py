"""Time of one training embedding pass, forward and backward: r3hf's `SIDRModel.embed` against differentiating the
dense formula (max-pool of ELU+1 over the whole [batch, length, V] logits, then top-k), as the original SiDR code does.

Both run on the same tokenized batch of vendored passages with the same weights, in eval mode (no dropout), after one
warm-up pass each; the timer holds the forward pass, the backward pass of the same weighted sum, and clearing the
gradients. The two must give the same embeddings, and gradients equal to float32 rounding (the largest relative
difference of all gradients together, checked before timing and reported).

    python benchmarks/bench_embed_backward.py --out benchmarks/results/embed_backward.json
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from r3hf.scripts.utils import DATA, demo_retriever, read_jsonl, timed, write_result
from r3hf.utils import ArgumentParser


def dense_embed(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    encoder, norm = model._encoder("passage")
    hidden = norm(encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
    per_token = F.elu(hidden @ encoder.get_input_embeddings().weight.T) + 1
    pooled = per_token.masked_fill(~attention_mask.bool().unsqueeze(-1), 0).amax(dim=1) * model.vocab_keep_mask
    top = pooled.topk(model.config.max_active_dims, dim=-1).indices
    return pooled * torch.zeros_like(pooled).scatter_(1, top, 1.0)


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--batch-size", type=int, default=32, help="passages per pass (a demo step embeds 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = demo_retriever().eval()
    passages = read_jsonl(f"{args.data}/corpus.jsonl.gz")[: args.batch_size]
    batch = model.tokenize([{"title": p["title"], "text": p["text"]} for p in passages], "passage")
    weights = torch.rand(args.batch_size, model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    params = [p for p in model.parameters() if p.requires_grad]
    ways = {
        "r3hf": lambda: model.embed(batch["input_ids"], batch["attention_mask"], "passage"),
        "dense formula": lambda: dense_embed(model, batch["input_ids"], batch["attention_mask"]),
    }

    def step(embed):
        values = embed()
        grads = torch.autograd.grad((values * weights).sum(), params, allow_unused=True)
        return values.detach(), grads

    (ours, our_grads), (dense, dense_grads) = step(ways["r3hf"]), step(ways["dense formula"])
    torch.testing.assert_close(ours, dense, rtol=1e-5, atol=1e-6)
    # Summation orders differ (a gather against a matmul over every token), so gradients agree to float32 rounding:
    # compared over all weights together, since some (attention key biases) have a true gradient of 0 and only noise.
    pairs = [(got, want) for got, want in zip(our_grads, dense_grads) if want is not None]
    gradient_error = float(
        torch.stack([(got - want).norm() for got, want in pairs]).norm()
        / torch.stack([want.norm() for _, want in pairs]).norm()
    )
    assert gradient_error < 1e-4, gradient_error

    seconds = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, embed in ways.items():
            seconds[name].append(timed(step, embed)[1])
    median = {name: statistics.median(s) for name, s in seconds.items()}
    report = {
        "question": "time of a training embedding pass, forward + backward: r3hf vs the dense formula",
        "batch": list(batch["input_ids"].shape),
        "vocab_size": model.config.vocab_size,
        "max_active_dims": model.config.max_active_dims,
        "seconds": seconds,
        "median_seconds": median,
        "speedup": median["dense formula"] / median["r3hf"],
        "relative_gradient_difference": gradient_error,
        "threads": torch.get_num_threads(),
    }
    print(
        f"{args.batch_size} passages × {batch['input_ids'].shape[1]} tokens, forward + backward: r3hf "
        f"{median['r3hf']:.2f} s, dense formula {median['dense formula']:.2f} s ({report['speedup']:.2f}×)"
    )
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
