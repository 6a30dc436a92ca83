"""Training-step benchmark: seconds per R3 step split into retrieval, reward and forward-backward, and a projection of
a full NQ-scale run (the paper's schedule) on 4 devices against the paper's "under one day".

One R3Trainer run over `--steps` batches of nq_train questions for three epochs: epoch 1 is offline warm-up (no
retrieval, no reward), epoch 2 is on-policy with a cold reward cache, epoch 3 on-policy on the same questions, where
the cache serves the passages retrieved again. Retriever: the packaged all-MiniLM-L6-v2 as SIDR; reward: the packaged
SmolLM2-135M-Instruct; index: bag-of-tokens over the shared corpus.

    python benchmarks/bench_train.py --data ../shared/data --out benchmarks/results/train_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import datasets
import torch
from bench_index import read_jsonl  # noqa: E402  (benchmarks/ is the script's folder)
from transformers import TrainerCallback

from r3hf import AnswerProbabilityReward, BagOfTokensIndex, R3Config, R3Trainer
from r3hf.data import load_retriever, resolve_model_path

PAPER = {"questions": 79_168, "batch_size": 128, "offline_epochs": 40, "online_epochs": 40, "devices": 4}


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, and the reward cache's lookups and hits during it."""

    def __init__(self, reward: AnswerProbabilityReward):
        self.reward = reward
        self.seconds: list[float] = []
        self.lookups: list[int] = []
        self.hits: list[int] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), self.reward.cache_lookups, self.reward.cache_hits)

    def on_step_end(self, args, state, control, **kwargs):
        start, lookups, hits = self._start
        self.seconds.append(time.perf_counter() - start)
        self.lookups.append(self.reward.cache_lookups - lookups)
        self.hits.append(self.reward.cache_hits - hits)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--retriever", default="all-minilm-l6-v2")
    parser.add_argument("--llm", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per step on this device")
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
    parser.add_argument("--top-m", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=20, help="re-ranked and scored passages per question (paper 20)")
    parser.add_argument("--reward-batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", help="reward LLM dtype")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = Path(args.data)
    cuda = torch.cuda.is_available()
    device = (
        torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads"
    )

    model = load_retriever(args.retriever)
    index = BagOfTokensIndex.build(read_jsonl(data / "corpus.jsonl.gz"), model.tokenizer)
    rows = read_jsonl(data / "nq_train.jsonl.gz")[: args.batch_size * args.steps]
    train = datasets.Dataset.from_list(
        [{"question": r["question"], "answers": r["answers"], "positive_ids": r["positive_ids"]} for r in rows]
    )
    reward = AnswerProbabilityReward(
        resolve_model_path(args.llm),
        threshold=0.3,
        batch_size=args.reward_batch_size,
        dtype=getattr(torch, args.dtype),
    )
    config = R3Config(
        output_dir="outputs/bench_train",
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=3,
        warmup_epochs_offline=1,
        retrieval_top_m=args.top_m,
        retrieval_top_k=args.top_k,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        seed=0,
        bf16=cuda,
    )
    timer = StepTimer(reward)
    trainer = R3Trainer(
        model=model, args=config, reward_funcs=reward, train_dataset=train, index=index, callbacks=[timer]
    )
    trainer.train()

    logs = [e for e in trainer.state.log_history if "loss" in e]
    phases = {
        "offline warm-up": slice(0, args.steps),
        "on-policy, cold cache": slice(args.steps, 2 * args.steps),
        "on-policy, warm cache": slice(2 * args.steps, 3 * args.steps),
    }
    table = {}
    for name, part in phases.items():
        steps, entries = timer.seconds[part], logs[part]
        retrieval = mean([e.get("profiling/retrieval_s", 0.0) for e in entries])
        scoring = mean([e.get("profiling/reward_s", 0.0) for e in entries])
        total = mean(steps)
        table[name] = {
            "step_s": total,
            "retrieval_s": retrieval,
            "reward_s": scoring,
            "forward_backward_s": total - retrieval - scoring,
            "cache_hit_rate": sum(timer.hits[part]) / max(1, sum(timer.lookups[part])),
        }

    # The paper's run: 128 questions per step over 4 devices, so 32 per device; per-question costs scale linearly.
    per_device = PAPER["batch_size"] // PAPER["devices"]
    scale = per_device / args.batch_size
    steps_per_epoch = -(-PAPER["questions"] // PAPER["batch_size"])
    hours = (
        steps_per_epoch
        * scale
        / 3600
        * (
            PAPER["offline_epochs"] * table["offline warm-up"]["step_s"]
            + table["on-policy, cold cache"]["step_s"]
            + (PAPER["online_epochs"] - 1) * table["on-policy, warm cache"]["step_s"]
        )
    )
    print(
        f"\n## R3 step time on {device}: {args.batch_size} questions per step, m={args.top_m}, k={args.top_k}, "
        f"reward LLM {args.llm} ({args.dtype})\n"
    )
    print("| phase | s/step | retrieval | reward | forward-backward | reward cache hits |")
    print("|---|---|---|---|---|---|")
    for name, t in table.items():
        print(
            f"| {name} | {t['step_s']:.2f} | {t['retrieval_s']:.2f} | {t['reward_s']:.2f} | "
            f"{t['forward_backward_s']:.2f} | {100 * t['cache_hit_rate']:.0f}% |"
        )
    print(
        f"\nProjection, paper schedule ({PAPER['questions']:,} questions, batch {PAPER['batch_size']} over "
        f"{PAPER['devices']} devices like this one, {PAPER['offline_epochs']} offline + {PAPER['online_epochs']} "
        f"on-policy epochs, steady-state cache hit rate as measured): {hours:,.1f} hours = "
        f"{hours / 24:.2f}x the paper's one day. The reward LLM here is {args.llm}, not Llama-3-8B."
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {"device": device, "args": vars(args), "phases": table, "projection_hours": hours, "paper": PAPER},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
