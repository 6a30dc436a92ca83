"""Run by test_recipes.py, under `accelerate launch` (2 CPU processes) or plain `python` (1 process): a short on-policy
training with checkpoints every 2 steps and a cached LLM reward.

    crash_resume_script.py OUT RUN [--output-dir DIR] [--crash-at STEP] [--resume CHECKPOINT] [--reward-cache DIR]
        [--batch-size N]

`--crash-at`: every process kills itself with SIGKILL once the checkpoint of that step is on disk, as a lost machine
would. At the end, the main process saves the weights as `OUT/RUN.safetensors` and every process writes what it saw in
`OUT/RUN-rankN.json`.
"""

import json
import os
import signal
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import save_file
from transformers import AutoTokenizer, TrainerCallback

from r3hf import AnswerProbabilityReward, R3Config, R3Trainer
from r3hf.assets import offline_model_path
from r3hf.utils import ArgumentParser
from tests.synthetic import make_environment
from tests.testing_utils import make_tiny_causal_lm, make_tiny_sidr


class KillAfterCheckpoint(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            PartialState().wait_for_everyone()  # every process has written its part of the checkpoint
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("run")
    parser.add_argument("--output-dir", type=Path, help="default: OUT/RUN")
    parser.add_argument("--crash-at", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--reward-cache")
    parser.add_argument("--batch-size", type=int, default=4, help="per process")
    cli = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))
    _, index, train, _ = make_environment(tokenizer)
    model = make_tiny_sidr(tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    llm = make_tiny_causal_lm(tokenizer)
    reward = AnswerProbabilityReward(llm, tokenizer=tokenizer, device="cpu", batch_size=8)
    args = R3Config(
        output_dir=str(cli.output_dir or cli.out / cli.run),
        per_device_train_batch_size=cli.batch_size,
        max_steps=4,  # 24 questions, 8 per step: the run crosses an epoch boundary after the resume
        warmup_epochs_offline=0,  # every step on-policy, so every step asks the reward
        learning_rate=1e-3,
        rerank_top_m=20,
        retrieval_top_k=4,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        reward_cache_dir=cli.reward_cache,
        use_cpu=True,
        disable_tqdm=True,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,  # launched by accelerate, or plain python
        seed=0,
    )
    trainer = R3Trainer(model=model, args=args, reward_funcs=reward, train_dataset=train, index=index)
    store_size_at_start = len(reward.cache)
    if cli.crash_at:
        trainer.add_callback(KillAfterCheckpoint(cli.crash_at))
    trainer.train(resume_from_checkpoint=cli.resume)
    if trainer.is_world_process_zero():
        save_file(
            {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()},
            cli.out / f"{cli.run}.safetensors",
        )
    hit_rates = {
        e["step"]: e["rewards/answer_probability/cache_hit_rate"]
        for e in trainer.state.log_history
        if "rewards/answer_probability/cache_hit_rate" in e
    }
    report = {
        "world_size": trainer.args.world_size,
        "store_size_at_start": store_size_at_start,
        "hit_rates": hit_rates,
    }
    (cli.out / f"{cli.run}-rank{trainer.args.process_index}.json").write_text(json.dumps(report))
    PartialState().wait_for_everyone()
    PartialState().destroy_process_group()  # as the train script: no process exits with its process group alive


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
