"""Train a retriever with R3 (the code behind `recipes/train.py` and `r3hf train`).

    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/train.py --config recipes/configs/nq.yaml
    python recipes/train.py --config recipes/configs/demo_cpu.yaml --max_steps 10     # CLI flags override the YAML

Loads the starting retriever (`model_name_or_path`: an r3hf or original SiDR checkpoint, or a BERT-style encoder),
builds (or loads) the bag-of-tokens index of the corpus, optionally calibrates the rewards offline against real
generation, evaluates, trains (resuming from the last checkpoint with `--resume_from_checkpoint true`), evaluates
again, saves metrics, state, model and card as `Trainer` does, and pushes to the Hub when `push_to_hub` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ..data import load_qa_dataset, load_retriever, load_table, resolve_model_path
from ..index import BagOfTokensIndex
from ..r3_config import R3Config
from ..r3_trainer import R3Trainer
from ..rewards import AnswerProbabilityReward, Calibration

logger = logging.get_logger(__name__)


@dataclass
class R3ScriptArguments(ScriptArguments):
    """What to train on and with, besides `trl.ScriptArguments`' `dataset_name`, `dataset_config`,
    `dataset_train_split` and `dataset_test_split`: the corpus, the reward LLMs and the offline stage. The starting
    retriever is `ModelConfig.model_name_or_path`."""

    corpus: str | None = field(default=None, metadata={"help": "Corpus (id, title, text): a local file or a Hub id."})
    corpus_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub corpus."})
    corpus_split: str = field(default="train", metadata={"help": "Split of a Hub corpus."})
    reward_llms: list[str] = field(
        default_factory=lambda: ["smollm2-135m-instruct"],
        metadata={"help": "Causal LMs of the rewards (paths, Hub ids or offline asset names), one reward each."},
    )
    reward_threshold: str = field(default="0.65", metadata={"help": "Global threshold, or 'calibrated'."})
    reward_batch_size: int = field(default=8, metadata={"help": "Sequences per LLM forward pass."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation QA data (file or Hub id)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N evaluation questions."})
    index: str | None = field(default=None, metadata={"help": "A saved index (folder or dataset repo) to reuse."})
    index_output_dir: str | None = field(default=None, metadata={"help": "Save the built index here."})
    calibrate: bool = field(default=False, metadata={"help": "Run the offline calibration stage first."})
    calibration_samples: int = field(default=200, metadata={"help": "Training questions used for calibration."})
    calibration_top_k: int = field(
        default=10, metadata={"help": "Candidates per question, from the initial retriever."}
    )
    calibration_file: str | None = field(
        default=None, metadata={"help": "Reuse (or write) the first reward's calibration JSONL."}
    )
    evaluate_before: bool = field(default=True, metadata={"help": "Evaluate the initial retriever first."})


def make_parser() -> TrlParser:
    return TrlParser((R3ScriptArguments, R3Config, ModelConfig))


def build_or_load_index(script_args: R3ScriptArguments, model) -> BagOfTokensIndex:
    if script_args.index:
        return BagOfTokensIndex.from_pretrained(script_args.index, tokenizer=model.tokenizer)
    if not script_args.corpus:
        raise ValueError("Pass --corpus (a file or Hub dataset of passages) or --index (a saved index).")
    corpus = load_table(script_args.corpus, script_args.corpus_split, config_name=script_args.corpus_config)
    index = BagOfTokensIndex.build(corpus, model.tokenizer, max_length=model.config.passage_max_length)
    if script_args.index_output_dir:
        index.save_pretrained(script_args.index_output_dir)
    return index


def calibrate(
    script_args: R3ScriptArguments, reward: AnswerProbabilityReward, model, index, train_dataset, path: str
) -> None:
    """The offline stage: candidates from the initial retriever, labelled by real generation."""
    if os.path.exists(path):
        reward.calibration = Calibration.load(path)
        return
    subset = train_dataset.select(range(min(script_args.calibration_samples, len(train_dataset))))
    results = model.retrieve(
        subset["question"], index, k=script_args.calibration_top_k, rerank_top_m=max(script_args.calibration_top_k, 20)
    )
    reward.calibrate(subset["question"], subset["answers"], index.get_passages(results.ids), save_path=path)


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`true` / `last`: the last checkpoint in `output_dir` (none: start afresh); a path: that checkpoint."""
    if resume_from_checkpoint is None or resume_from_checkpoint.lower() in ("false", "no", ""):
        return None
    if resume_from_checkpoint.lower() in ("true", "last"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.warning(f"No checkpoint in {output_dir} to resume from: training starts afresh.")
        return last
    return resume_from_checkpoint


def main(script_args: R3ScriptArguments, training_args: R3Config, model_args: ModelConfig) -> R3Trainer:
    if not script_args.dataset_name:
        raise ValueError("Pass --dataset_name: the training QA data (a local file or a Hub dataset id).")
    if not model_args.model_name_or_path:
        raise ValueError("Pass --model_name_or_path: the starting retriever (SIDR checkpoint or BERT-style encoder).")
    model = load_retriever(model_args.model_name_or_path)
    index = build_or_load_index(script_args, model)
    train_dataset = load_qa_dataset(
        script_args.dataset_name,
        script_args.dataset_train_split,
        script_args.max_train_samples,
        script_args.dataset_config,
    )
    eval_dataset = None
    if script_args.eval_dataset_name:
        eval_dataset = load_qa_dataset(
            script_args.eval_dataset_name,
            script_args.dataset_test_split,
            script_args.max_eval_samples,
            script_args.dataset_config,
        )
    threshold = script_args.reward_threshold
    rewards = [
        AnswerProbabilityReward(
            resolve_model_path(llm),
            threshold=threshold if threshold == "calibrated" else float(threshold),
            batch_size=script_args.reward_batch_size,
        )
        for llm in script_args.reward_llms
    ]
    if script_args.calibrate or threshold == "calibrated":
        os.makedirs(training_args.output_dir, exist_ok=True)
        for i, reward in enumerate(rewards):
            default = os.path.join(training_args.output_dir, f"calibration_{i}.jsonl")
            path = script_args.calibration_file if i == 0 and script_args.calibration_file else default
            calibrate(script_args, reward, model, index, train_dataset, path)
    trainer = R3Trainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        index=index,
        peft_config=get_peft_config(model_args),
    )
    if eval_dataset is not None and script_args.evaluate_before:
        metrics = trainer.evaluate(metric_key_prefix="initial")
        trainer.log_metrics("initial", metrics)
        trainer.save_metrics("initial", metrics)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    if eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if model_args.use_peft:  # save a plain SIDRModel with the adapters merged in
        trainer.model = trainer.model.merge_and_unload()
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
