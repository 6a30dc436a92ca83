"""Loss-scale study: how the RCL loss behaves for a SIDR retriever started from a general encoder, and which setting
trains it best for the same budget.

Measures the raw score scale of a MiniLM-initialised SIDR (active dimensions, embedding norms, E(q)·E(d), E(q)·T(d),
T(q)·E(d) on question / gold-passage pairs), then trains one variant per `--variant` for `--steps` offline steps on gold
passages with bag-of-tokens hard negatives (the paper's offline stage without LLM labels), logging the loss, its parts
and the gradient norm, and reports answer recall@k on held-out dev questions after the same budget.

    python benchmarks/bench_loss_scale.py --out benchmarks/results/loss_scale.json \
        --variant paper:temperature=1 --variant tau20:temperature=20 --variant tau20-lr1e-4:temperature=20,learning_rate=1e-4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
import torch
from transformers import TrainerCallback

from r3hf import R3Trainer
from r3hf.data import load_qa_dataset
from r3hf.evaluation import answer_recall_at_k
from r3hf.scripts.utils import DATA, cpu_config, demo_index, demo_retriever, write_result
from r3hf.utils import ArgumentParser


def parse_variant(text: str) -> tuple[str, dict]:
    """`name:key=value,key=value` with JSON values (numbers, booleans), anything else kept as a string."""
    name, _, settings = text.partition(":")
    values = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        try:
            values[key] = json.loads(value)
        except json.JSONDecodeError:
            values[key] = value
    return name, values


def score_scale(model, questions, passages) -> dict:
    """Statistics of the three score matrices of the RCL loss on matched question / passage pairs."""
    with torch.no_grad():
        q, d = model.tokenize(questions, "query"), model.tokenize(passages, "passage")
        out = model(
            query_input_ids=q["input_ids"],
            query_attention_mask=q["attention_mask"],
            passage_input_ids=d["input_ids"],
            passage_attention_mask=d["attention_mask"],
        )
    stats = {
        "query_active_dims": (out.query_embeds > 0).sum(1).float().mean().item(),
        "query_min_active_value": out.query_embeds[out.query_embeds > 0].min().item(),
        "query_norm": out.query_embeds.norm(dim=1).mean().item(),
        "passage_norm": out.passage_embeds.norm(dim=1).mean().item(),
    }
    for name, a, b in (
        ("qd", out.query_embeds, out.passage_embeds),
        ("qT", out.query_embeds, out.passage_bag_of_tokens),
        ("Td", out.query_bag_of_tokens, out.passage_embeds),
    ):
        s = a @ b.T
        off = s[~torch.eye(len(s), dtype=torch.bool)]
        stats[f"{name}_positive_mean"] = s.diag().mean().item()
        stats[f"{name}_negative_mean"] = off.mean().item()
        stats[f"{name}_negative_std"] = off.std().item()
    return stats


def dev_recall(model, index, dev, ks=(1, 5), rerank_top_m=10) -> dict:
    results = model.retrieve(dev["question"], index, k=max(ks), rerank_top_m=rerank_top_m)
    return answer_recall_at_k(index.get_passages(results.rows), dev["answers"], ks)


class DevRecallCurve(TrainerCallback):
    """Dev recall every `every` steps, to see whether more steps would still pay."""

    def __init__(self, index, dev, every: int):
        self.index, self.dev, self.every = index, dev, every
        self.points: list[dict] = []
        self.seconds = 0.0

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            start = time.perf_counter()
            model.eval()
            self.points.append({"step": state.global_step, **dev_recall(model, self.index, self.dev)})
            model.train()
            self.seconds += time.perf_counter() - start
            print("recall", json.dumps(self.points[-1]), flush=True)


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", required=True, help="name:key=value,key=value (R3Config fields)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dev-samples", type=int, default=100, help="per dev set (nq_dev, squad_dev)")
    parser.add_argument(
        "--eval-every", type=int, default=0, help="also measure dev recall every N steps (0: at the end only)"
    )
    parser.add_argument("--out", default="benchmarks/results/loss_scale.json")
    args = parser.parse_args()
    out_path = Path(args.out)
    report = json.loads(out_path.read_text()) if out_path.exists() else {"variants": {}}

    fresh = demo_retriever
    model = fresh()
    index = demo_index(model)
    row_of = {pid: i for i, pid in enumerate(index.corpus["id"])}
    train = (
        datasets.concatenate_datasets(
            [
                load_qa_dataset(str(DATA / f"{name}_train.jsonl.gz")).select_columns(
                    ["question", "answers", "positive_ids"]
                )
                for name in ("nq", "squad")
            ]
        )
        .shuffle(seed=0)
        .select(range(args.steps * args.batch_size))
    )
    dev = datasets.concatenate_datasets(
        [
            load_qa_dataset(str(DATA / f"{name}_dev.jsonl.gz"), max_rows=args.dev_samples).select_columns(
                ["question", "answers"]
            )
            for name in ("nq", "squad")
        ]
    )
    if "scale" not in report:
        sample = train.select(range(32))
        report["scale"] = score_scale(
            model, sample["question"], [index.corpus[row_of[p[0]]] for p in sample["positive_ids"]]
        )
        start = time.perf_counter()
        report["initial"] = dev_recall(model, index, dev)
        report["initial"]["eval_s"] = time.perf_counter() - start
        print(json.dumps({"scale": report["scale"], "initial": report["initial"]}), flush=True)

    for spec in args.variant:
        name, overrides = parse_variant(spec)
        model = fresh()
        config = cpu_config(
            f"outputs/loss_scale/{name}",
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            offline_only=True,
            positive_fallback="gold",
            disable_tqdm=True,
            **{"learning_rate": 2e-5, "max_grad_norm": 2.0, **overrides},
        )
        trainer = R3Trainer(model=model, args=config, train_dataset=train, index=index)
        curve = DevRecallCurve(index, dev, args.eval_every) if args.eval_every else None
        if curve:
            trainer.add_callback(curve)
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start - (curve.seconds if curve else 0.0)
        logs = [e for e in trainer.state.log_history if "loss" in e]
        result = {
            "overrides": overrides,
            "train_s": train_s,
            "loss": [e["loss"] for e in logs],
            "grad_norm": [e.get("grad_norm") for e in logs],
            "loss_parts": {k: [e.get(f"loss/{k}") for e in logs] for k in ("qd", "qT", "Td")},
            "active_dims": [e.get("sparsity/query_active_dims") for e in logs],
            **dev_recall(trainer.model, index, dev),
        }
        if curve:
            result["recall_curve"] = curve.points
        report["variants"][name] = result
        print(name, json.dumps({k: v for k, v in result.items() if not isinstance(v, list | dict)}), flush=True)
        write_result(out_path, {k: v for k, v in report.items() if k != "provenance"})


if __name__ == "__main__":
    main()
