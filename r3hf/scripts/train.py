"""Train a retriever with R3 (the code behind `recipes/train.py` and `r3hf train`).

    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/train.py --config recipes/configs/nq.yaml
    python recipes/train.py --config recipes/configs/demo_cpu.yaml --max_steps 10     # CLI flags override the YAML

Builds (or loads) the bag-of-tokens index of the corpus, optionally calibrates the reward offline against real
generation, trains, evaluates before and after, saves, and pushes to the Hub when `push_to_hub` is set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from trl import ModelConfig, TrlParser, get_peft_config

from ..data import load_qa_dataset, load_retriever, load_table, resolve_model_path
from ..index import BagOfTokensIndex
from ..r3_config import R3Config
from ..r3_trainer import R3Trainer
from ..rewards import AnswerProbabilityReward, Calibration


@dataclass
class R3ScriptArguments:
    """What to train on and with: data, corpus, starting retriever, reward LLM."""

    dataset_name: str = field(metadata={"help": "Training QA data: a local JSONL/Parquet file or a Hub dataset id."})
    corpus: str = field(metadata={"help": "Corpus (id, title, text): a local file or a Hub dataset id."})
    retriever: str = field(
        default="all-minilm-l6-v2", metadata={"help": "SIDR checkpoint or BERT-style encoder (path, Hub id or asset)."}
    )
    reward_llm: str = field(
        default="smollm2-135m-instruct", metadata={"help": "Causal LM of the reward (path, Hub id or asset)."}
    )
    reward_threshold: str = field(default="0.65", metadata={"help": "Global threshold, or 'calibrated'."})
    reward_batch_size: int = field(default=8, metadata={"help": "Sequences per LLM forward pass."})
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub QA dataset."})
    corpus_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub corpus."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of a Hub training dataset."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation QA data (file or Hub id)."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split of a Hub evaluation dataset."})
    corpus_split: str = field(default="train", metadata={"help": "Split of a Hub corpus."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N evaluation questions."})
    index: str | None = field(default=None, metadata={"help": "A saved index (folder or dataset repo) to reuse."})
    index_output_dir: str | None = field(default=None, metadata={"help": "Save the built index here."})
    calibrate: bool = field(default=False, metadata={"help": "Run the offline calibration stage first."})
    calibration_samples: int = field(default=200, metadata={"help": "Training questions used for calibration."})
    calibration_top_k: int = field(
        default=10, metadata={"help": "Candidates per question, from the initial retriever."}
    )
    calibration_file: str | None = field(default=None, metadata={"help": "Reuse (or write) a calibration JSONL."})
    evaluate_before: bool = field(default=True, metadata={"help": "Evaluate the initial retriever first."})


def make_parser() -> TrlParser:
    return TrlParser((R3ScriptArguments, R3Config, ModelConfig))


def build_or_load_index(script_args: R3ScriptArguments, model) -> BagOfTokensIndex:
    if script_args.index:
        return BagOfTokensIndex.from_pretrained(script_args.index, tokenizer=model.tokenizer)
    corpus = load_table(script_args.corpus, script_args.corpus_split, config_name=script_args.corpus_config)
    index = BagOfTokensIndex.build(corpus, model.tokenizer, max_length=model.config.passage_max_length)
    if script_args.index_output_dir:
        index.save_pretrained(script_args.index_output_dir)
    return index


def calibrate(
    script_args: R3ScriptArguments, reward: AnswerProbabilityReward, model, index, train_dataset, output_dir: str
) -> None:
    """The offline stage: candidates from the initial retriever, labelled by real generation."""
    path = script_args.calibration_file
    if path and os.path.exists(path):
        reward.calibration = Calibration.load(path)
        return
    subset = train_dataset.select(range(min(script_args.calibration_samples, len(train_dataset))))
    results = model.retrieve(
        subset["question"], index, k=script_args.calibration_top_k, rerank_top_m=max(script_args.calibration_top_k, 20)
    )
    reward.calibrate(
        subset["question"],
        subset["answers"],
        index.get_passages(results.ids),
        save_path=path or os.path.join(output_dir, "calibration.jsonl"),
    )


def main(script_args: R3ScriptArguments, training_args: R3Config, model_args: ModelConfig | None = None) -> R3Trainer:
    model = load_retriever(script_args.retriever)
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
    reward = AnswerProbabilityReward(
        resolve_model_path(script_args.reward_llm),
        threshold=threshold if threshold == "calibrated" else float(threshold),
        batch_size=script_args.reward_batch_size,
    )
    if script_args.calibrate or threshold == "calibrated":
        os.makedirs(training_args.output_dir, exist_ok=True)
        calibrate(script_args, reward, model, index, train_dataset, training_args.output_dir)
    peft_config = get_peft_config(model_args) if model_args is not None else None
    trainer = R3Trainer(
        model=model,
        args=training_args,
        reward_funcs=reward,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        index=index,
        peft_config=peft_config,
    )
    results = {}
    if eval_dataset is not None and script_args.evaluate_before:
        results["initial"] = trainer.evaluate()
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if eval_dataset is not None:
        results["final"] = trainer.evaluate()
    if peft_config is not None:  # save a plain SIDRModel with the adapters merged in
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)
    if trainer.is_world_process_zero():
        results["log_history"] = trainer.state.log_history
        with open(os.path.join(training_args.output_dir, "r3_results.json"), "w") as f:
            json.dump(results, f, indent=1)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    return trainer


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
