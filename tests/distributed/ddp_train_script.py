"""Run by test_trainer.py under `accelerate launch` (2 CPU processes): train a few steps, report a weight checksum."""

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoTokenizer

from r3hf import R3Config, R3Trainer
from r3hf.assets import offline_model_path
from tests.synthetic import hidden_subset_reward, make_environment
from tests.testing_utils import make_tiny_sidr


def checksum(model) -> float:
    with torch.no_grad():
        return float(sum((p.double() * (i + 1)).sum() for i, p in enumerate(model.parameters())))


def main(out: Path):
    tokenizer = AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))
    _, index, train, hidden = make_environment(tokenizer)
    model = make_tiny_sidr(tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    initial = checksum(model)
    args = R3Config(
        output_dir=str(out / "run"),
        per_device_train_batch_size=4,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        rerank_top_m=20,
        retrieval_top_k=5,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        ddp_backend="gloo",
    )
    trainer = R3Trainer(
        model=model, args=args, reward_funcs=hidden_subset_reward(hidden), train_dataset=train, index=index
    )
    trainer.train()
    report = {
        "world_size": trainer.args.world_size,
        "steps": trainer.state.global_step,
        "initial_checksum": initial,
        "checksum": checksum(trainer.model),
        "logged": next(log for log in reversed(trainer.state.log_history) if "frac_online_positive" in log),
    }
    (out / f"rank{trainer.args.process_index}.json").write_text(json.dumps(report))
    PartialState().wait_for_everyone()
    PartialState().destroy_process_group()  # as the train script: no process exits with its process group alive


if __name__ == "__main__":
    torch.manual_seed(0)
    main(Path(sys.argv[1]))
