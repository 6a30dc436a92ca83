"""Training benchmark: seconds per stage of `recipes/train.py` with 1 and with N processes, so that the sharing
across processes shows as a speed-up, and a projection of a full NQ-scale run (the paper's schedule) on 4 devices
against the paper's "under one day".

For each `--processes` count, the script launches itself under `accelerate launch` (CPU processes with gloo when there
is no GPU, one process per GPU otherwise) and runs the recipe's stages as `recipes/train.py` does: the index built once
by the main process and loaded by all (`build_or_load_index`), the offline calibration split across processes
(`calibrate`), then one R3Trainer run over `--steps` batches of nq_train questions for three epochs: epoch 1 offline
warm-up (no retrieval, no reward), epoch 2 on-policy with a cold reward cache, epoch 3 on-policy on the same
questions, where the cache serves the passages retrieved again. The global batch (`--batch-size` questions per step)
is the same for every process count. Retriever: the packaged all-MiniLM-L6-v2 as SIDR; reward: the packaged
SmolLM2-135M-Instruct; index: bag-of-tokens over the shared corpus.

    python benchmarks/bench_train.py --processes 1 2 --out benchmarks/results/train_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from transformers import TrainerCallback

from r3hf import AnswerProbabilityReward, R3Config, R3Trainer
from r3hf.models import load_retriever, resolve_model_path
from r3hf.scripts.train import R3ScriptArguments, build_or_load_index, calibrate
from r3hf.scripts.utils import DATA, read_jsonl, write_result
from r3hf.utils import ArgumentParser

PAPER = {"questions": 79_168, "batch_size": 128, "offline_epochs": 40, "online_epochs": 40, "devices": 4}
ROOT = Path(__file__).resolve().parents[1]


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


def worker(args) -> None:
    """One process of a launch: the recipe's stages, timed; the main process writes the report."""
    cuda = torch.cuda.is_available()
    config = R3Config(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size // args.processes,
        num_train_epochs=3,
        warmup_epochs_offline=1,
        rerank_top_m=args.rerank_top_m,
        retrieval_top_k=args.retrieval_top_k,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        ddp_backend="gloo" if not cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        seed=0,
        bf16=cuda,
        disable_tqdm=True,
    )
    _ = config.device  # sets up the processes, as the recipe does
    state = PartialState()
    stages = {}
    model = load_retriever(args.retriever)
    script_args = R3ScriptArguments(
        dataset_name="nq_train",
        corpus=str(Path(args.data) / "corpus.jsonl.gz"),
        calibration_samples=args.calibration_samples,
        calibration_top_k=args.calibration_top_k,
    )
    start = time.perf_counter()
    index = build_or_load_index(script_args, model, args.output_dir, state)
    stages["index_s"] = time.perf_counter() - start
    rows = read_jsonl(Path(args.data) / "nq_train.jsonl.gz")[
        : max(args.batch_size * args.steps, args.calibration_samples)
    ]
    train = datasets.Dataset.from_list(
        [{"question": r["question"], "answers": r["answers"], "positive_ids": r["positive_ids"]} for r in rows]
    )
    reward = AnswerProbabilityReward(
        resolve_model_path(args.llm),
        threshold=0.3,
        batch_size=args.reward_batch_size,
        dtype=getattr(torch, args.dtype),
        device=state.device,
    )
    start = time.perf_counter()
    calibrate(script_args, reward, model, index, train, str(Path(args.output_dir, "calibration.jsonl")), state)
    stages["calibration_s"] = time.perf_counter() - start
    timer = StepTimer(reward)
    trainer = R3Trainer(
        model=model,
        args=config,
        reward_funcs=reward,
        train_dataset=train.select(range(args.batch_size * args.steps)),
        index=index,
        callbacks=[timer],
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
    if state.is_main_process:
        report = {"processes": state.num_processes, "stages": stages, "phases": table}
        Path(args.output_dir, "report.json").write_text(json.dumps(report, indent=1))
    state.wait_for_everyone()
    state.destroy_process_group()  # as the train script: no process exits with its process group alive


def launch(args, processes: int) -> dict:
    """Run the stages in `processes` processes from a clean output folder; the main process's report."""
    folder = Path(args.work_dir) / f"{processes}proc"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cuda = torch.cuda.is_available()
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    if cuda:
        launcher += ["--multi_gpu"] if processes > 1 else []
    else:
        launcher += ["--config_file", str(ROOT / "recipes/accelerate_configs/cpu_2proc.yaml")]
    forwarded = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in (
            "data",
            "retriever",
            "llm",
            "batch_size",
            "steps",
            "rerank_top_m",
            "retrieval_top_k",
            "calibration_samples",
        )
        + ("calibration_top_k", "reward_batch_size", "dtype")
    ]
    env = dict(os.environ)
    if not cuda:  # share the cores: the same machine, split between the processes
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    command = [*launcher, __file__, "--worker", f"--output-dir={folder}", f"--processes={processes}", *forwarded]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    report = json.loads((folder / "report.json").read_text())
    report["wall_s"] = time.perf_counter() - start
    return report


def project(table: dict, batch_size: int, processes: int) -> float:
    """Hours of the paper's run on 4 devices, each doing a quarter of a 128-question step like these processes."""
    per_device = PAPER["batch_size"] // PAPER["devices"]
    scale = per_device / (batch_size / processes)
    steps_per_epoch = -(-PAPER["questions"] // PAPER["batch_size"])
    return (
        steps_per_epoch
        * scale
        / 3600
        * (
            PAPER["offline_epochs"] * table["offline warm-up"]["step_s"]
            + table["on-policy, cold cache"]["step_s"]
            + (PAPER["online_epochs"] - 1) * table["on-policy, warm cache"]["step_s"]
        )
    )


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--retriever", default="all-minilm-l6-v2")
    parser.add_argument("--llm", default="smollm2-135m-instruct")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8, help="questions per step, over all processes")
    parser.add_argument("--steps", type=int, default=3, help="steps per epoch")
    parser.add_argument("--rerank-top-m", type=int, default=20)
    parser.add_argument(
        "--retrieval-top-k", type=int, default=20, help="re-ranked and scored passages per question (paper 20)"
    )
    parser.add_argument("--calibration-samples", type=int, default=16, help="questions labelled by generation")
    parser.add_argument("--calibration-top-k", type=int, default=4)
    parser.add_argument("--reward-batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", help="reward LLM dtype")
    parser.add_argument("--work-dir", default="outputs/bench_train")
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.processes = args.processes[0]
        return worker(args)
    for n in args.processes:
        if args.batch_size % n:
            raise ValueError(f"--batch-size {args.batch_size} does not split over {n} processes: pick a multiple.")
    cuda = torch.cuda.is_available()
    device = (
        torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores"
    )
    runs = {n: launch(args, n) for n in args.processes}
    base = runs[args.processes[0]]
    print(
        f"\n## Stages of recipes/train.py on {device}: {args.batch_size} questions per step over all processes, "
        f"m={args.rerank_top_m}, k={args.retrieval_top_k}, reward LLM {args.llm} ({args.dtype})\n"
    )
    print(
        "| processes | index | calibration | offline step | on-policy step, cold | on-policy step, warm | warm hits |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, run in runs.items():
        cells = [run["stages"]["index_s"], run["stages"]["calibration_s"]] + [
            run["phases"][p]["step_s"] for p in ("offline warm-up", "on-policy, cold cache", "on-policy, warm cache")
        ]
        bases = [base["stages"]["index_s"], base["stages"]["calibration_s"]] + [
            base["phases"][p]["step_s"] for p in ("offline warm-up", "on-policy, cold cache", "on-policy, warm cache")
        ]
        print(
            f"| {n} | "
            + " | ".join(f"{c:.1f} s ({b / c:.2f}x)" for c, b in zip(cells, bases))
            + f" | {100 * run['phases']['on-policy, warm cache']['cache_hit_rate']:.0f}% |"
        )
        run["projection_hours"] = project(run["phases"], args.batch_size, n)
    last = runs[args.processes[-1]]
    print(
        f"\nSpeed-ups are against {args.processes[0]} process(es) in the same run. Projection from the "
        f"{args.processes[-1]}-process run (paper schedule: {PAPER['questions']:,} questions, batch "
        f"{PAPER['batch_size']} over {PAPER['devices']} devices like one of these processes, "
        f"{PAPER['offline_epochs']} offline + {PAPER['online_epochs']} on-policy epochs, cache hit rate as measured): "
        f"{last['projection_hours']:,.1f} hours = {last['projection_hours'] / 24:.2f}x the paper's one day. "
        f"The reward LLM here is {args.llm}, not Llama-3-8B."
    )
    if args.out:
        write_result(args.out, {"device": device, "args": vars(args), "runs": runs, "paper": PAPER})


if __name__ == "__main__":
    main()
