"""Train a retriever with R3 (the code behind `recipes/train.py` and `r3hf train`).

    accelerate launch --config_file recipes/accelerate_configs/multi_gpu.yaml recipes/train.py --config recipes/configs/nq.yaml
    python recipes/train.py --config recipes/configs/demo_cpu.yaml --max-steps 10     # CLI flags override the YAML

Loads the starting retriever (`model_name_or_path`: an r3hf or original SiDR checkpoint, or a BERT-style encoder),
builds (or loads) the bag-of-tokens index of the corpus, optionally calibrates the rewards offline against real
generation, evaluates, trains (resuming from the last checkpoint with `--resume-from-checkpoint true`), evaluates
again, saves metrics, state, model and card as `Trainer` does, and pushes to the Hub when `push_to_hub` is set.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoTokenizer
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

from ..closed_set import load_closed_set_dataset
from ..data import load_qa_dataset, load_table
from ..index import INDEX_CONFIG, BagOfTokensIndex
from ..models import load_retriever, resolve_model_path
from ..r3_config import R3Config
from ..r3_trainer import R3Trainer
from ..rewards import (
    CHAT_PROMPT,
    CLOSED_SET_PROMPTS,
    OPENQA_PROMPT,
    AnswerProbabilityReward,
    RewardCache,
    calibrate_in_parts,
)

logger = logging.get_logger(__name__)


@dataclass
class R3ScriptArguments(ScriptArguments):
    """What to train on and with, besides `trl.ScriptArguments`' `dataset_name`, `dataset_config`,
    `dataset_train_split` and `dataset_test_split`: the corpus, the reward LLMs and the offline stage. The starting
    retriever is `ModelConfig.model_name_or_path`."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "A closed-set task, 'pubhealth' or 'arc_c': its datasets are mapped to question, choices and the "
            "gold index, its OpenRAG prompt is used, and the offline stage labels by the closed-set rule."
        },
    )
    corpus: str | None = field(default=None, metadata={"help": "Corpus (id, title, text): a local file or a Hub id."})
    corpus_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub corpus."})
    corpus_split: str = field(default="train", metadata={"help": "Split of a Hub corpus."})
    reward_llms: list[str] = field(
        default_factory=lambda: ["smollm2-135m-instruct"],
        metadata={"help": "Causal LMs of the rewards (paths, Hub ids or offline asset names), one reward each."},
    )
    reward_threshold: str = field(default="0.65", metadata={"help": "Global threshold, or 'calibrated'."})
    reward_batch_size: int = field(default=8, metadata={"help": "Sequences per LLM forward pass."})
    reward_max_new_tokens: int = field(
        default=100,
        metadata={"help": "Greedy generation length of the offline labels and of RAG accuracy (the paper's 100)."},
    )
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation QA data (file or Hub id)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N evaluation questions."})
    index: str | None = field(default=None, metadata={"help": "A saved index (folder or dataset repo) to reuse."})
    index_output_dir: str | None = field(
        default=None, metadata={"help": "Where the built index is saved (default: <output_dir>/index)."}
    )
    index_num_proc: int | None = field(default=None, metadata={"help": "Processes that build the index."})
    bm25_stopwords: str = field(
        default="en", metadata={"help": "Stopwords of the index's bm25s part ('none' for none), for bm25/hybrid."}
    )
    calibrate: bool = field(default=False, metadata={"help": "Run the offline calibration stage first."})
    calibration_samples: int = field(default=200, metadata={"help": "Training questions used for calibration."})
    calibration_top_k: int = field(
        default=10, metadata={"help": "Candidates per question, from the initial retriever."}
    )
    calibration_file: str | None = field(
        default=None, metadata={"help": "Reuse (or write) the first reward's calibration JSONL."}
    )
    evaluate_before: bool = field(default=True, metadata={"help": "Evaluate the initial retriever first."})
    dry_run: bool = field(
        default=False,
        metadata={"help": "Check the configuration, log the stage plan with its counts, and exit without training."},
    )
    # What a dry run could not check on this machine (set by the parser, not an argument).
    dry_run_unchecked: list[str] = field(default_factory=list, init=False, repr=False)


def _precision_unsupported(training_args_namespace) -> list[tuple[str, str]]:
    """The mixed-precision flags set for a GPU run that this machine cannot honour, each with the reason."""
    if getattr(training_args_namespace, "use_cpu", False):
        return []
    gpu = torch.cuda.is_available()
    unsupported = []
    if getattr(training_args_namespace, "bf16", False) and not (gpu and torch.cuda.is_bf16_supported()):
        machine = "this machine's GPU does not support it" if gpu else "this machine has none"
        unsupported.append(("bf16", f"bf16 requested: needs a GPU that supports it; {machine}"))
    if getattr(training_args_namespace, "fp16", False) and not gpu:
        unsupported.append(("fp16", "fp16 requested: needs a GPU; this machine has none"))
    return unsupported


class R3Parser(TrlParser):
    """`TrlParser` over ([`R3ScriptArguments`], [`R3Config`], `trl.ModelConfig`). For a dry run on a machine that
    cannot run the requested mixed precision (the paper recipes' `bf16: true` without a GPU), the precision is
    turned off, so that `TrainingArguments` does not refuse it, and recorded in `dry_run_unchecked` for the report:
    the dry run checks everything else."""

    def parse_args_into_dataclasses(self, args=None, **kwargs):
        args = list(sys.argv[1:] if args is None else args)
        namespace, _ = self.parse_known_args(args)
        unsupported = _precision_unsupported(namespace) if namespace.dry_run else []
        for flag, _ in unsupported:
            args += [f"--{flag}", "false"]
        outputs = super().parse_args_into_dataclasses(args, **kwargs)
        outputs[0].dry_run_unchecked = [reason for _, reason in unsupported]
        return outputs


def make_parser() -> R3Parser:
    return R3Parser((R3ScriptArguments, R3Config, ModelConfig))


def build_or_load_index(
    script_args: R3ScriptArguments, model, output_dir: str, state: PartialState, bm25: bool = False
) -> BagOfTokensIndex:
    """The bag-of-tokens index, built once: by the main process (in `index_num_proc` processes), saved to
    `index_output_dir` (default `<output_dir>/index`), then loaded memory-mapped by every process. A saved index of
    the same corpus size there is reused (a restarted run does not rebuild). With `bm25` (training reads bm25s:
    [`R3Config.needs_bm25`][r3hf.r3_config.R3Config.needs_bm25]), the index carries a bm25s part with
    `bm25_stopwords`: added (and saved) once when the saved index has none, and refused when a given `--index` has
    none or other settings."""
    stopwords = None if script_args.bm25_stopwords == "none" else script_args.bm25_stopwords
    if script_args.index:
        index = BagOfTokensIndex.from_pretrained(script_args.index, tokenizer=model.tokenizer)
        if bm25:
            index.require_bm25({"stopwords": stopwords})
        return index
    if not script_args.corpus:
        raise ValueError("Pass --corpus (a file or Hub dataset of passages) or --index (a saved index).")
    folder = Path(script_args.index_output_dir or os.path.join(output_dir, "index"))
    if state.is_main_process:
        corpus = load_table(script_args.corpus, script_args.corpus_split, config_name=script_args.corpus_config)
        saved = folder / INDEX_CONFIG
        saved_config = json.loads(saved.read_text()) if saved.exists() else {}
        if saved_config.get("num_passages") == len(corpus):
            logger.info(f"Reusing the index saved in {folder}.")
            if bm25 and "bm25" not in saved_config:
                index = BagOfTokensIndex.from_pretrained(folder, tokenizer=model.tokenizer, mmap=False)
                index.add_bm25(stopwords)
                index.save_pretrained(folder)
        else:
            index = BagOfTokensIndex.build(
                corpus,
                model.tokenizer,
                max_length=model.config.passage_max_length,
                num_proc=script_args.index_num_proc,
                show_progress_bar=True,
            )
            if bm25:
                index.add_bm25(stopwords)
            index.save_pretrained(folder)
    state.wait_for_everyone()
    index = BagOfTokensIndex.from_pretrained(folder, tokenizer=model.tokenizer)
    if bm25:
        index.require_bm25({"stopwords": stopwords})
    return index


def load_task_dataset(script_args: R3ScriptArguments, name: str, split: str, max_rows: int | None) -> datasets.Dataset:
    """The first `max_rows` training or evaluation questions: a free-form QA dataset, or a closed-set task's
    (`--task`) mapped to `question`, `choices` and the gold index."""
    if script_args.task:
        return load_closed_set_dataset(script_args.task, name, split, max_rows, script_args.dataset_config)
    return load_qa_dataset(name, split, max_rows, script_args.dataset_config)


def calibrate(
    script_args: R3ScriptArguments,
    reward: AnswerProbabilityReward,
    model,
    index,
    train_dataset,
    path: str,
    state: PartialState,
    pipeline: dict | None = None,
    chunk_size: int = 16,
    reward_llm: str | None = None,
) -> None:
    """The offline stage of the train script: the initial retriever's top `calibration_top_k` passages of the first
    `calibration_samples` questions, labelled by real generation across processes ([`calibrate_in_parts`]), set as
    the reward's calibration. `pipeline` (`first_stage`, `fusion`, `fusion_weight`) says where the candidates come
    from: the paper's bag-of-tokens first stage by default. The labels are recorded with what they depend on
    (`reward_llm` and its weights' [`Reader.fingerprint`], the reward's generation length, the task, the retriever,
    the top-k and `pipeline`), and an existing file labelled otherwise, or for other questions, is refused."""
    k = script_args.calibration_top_k
    if script_args.task:  # the closed-set rule: no generation needed

        def label(rows, candidates: list[list[dict]]) -> list[dict]:
            return reward.label_closed_set(rows["question"], rows["choices"], rows["answers"], candidates)

    else:

        def label(rows, candidates: list[list[dict]]) -> list[dict]:
            return reward.label_by_generation(rows["question"], rows["answers"], candidates)

    def candidates(questions: list[str]) -> list[list[dict]]:
        return index.get_passages(
            model.retrieve(questions, index, k=k, rerank_top_m=max(k, 20), **(pipeline or {})).rows
        )

    reward.calibration = calibrate_in_parts(
        label,
        candidates,
        train_dataset,
        path,
        num_questions=script_args.calibration_samples,
        per_question=min(k, len(index)),
        state=state,
        chunk_size=chunk_size,
        settings={
            "reward_llm": reward_llm,
            "reward_llm_weights": reward.reader.fingerprint,
            "reward_max_new_tokens": script_args.reward_max_new_tokens,
            "task": script_args.task,
            "retriever": getattr(model, "name_or_path", None),
            "calibration_top_k": k,
            "pipeline": pipeline or {},
        },
    )


def _check_writable(folder: str | os.PathLike) -> None:
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{folder} is not writable ({error}): choose another output folder.") from error


def _load_problem(what: str, name, error: Exception) -> str:
    """One line saying why `what` (`name`) could not be loaded, for the dry-run report."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    hub_errors = (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError, TimeoutError)
    url = str(name).startswith(("http://", "https://")) and isinstance(error, FileNotFoundError)
    if url or isinstance(error, hub_errors) or "offline" in reason.lower() or "connect" in reason.lower():
        reason = f"the Hub (or its URL) cannot be reached from this machine ({type(error).__name__}: {reason})"
    return f"{what} {name!s}: cannot be loaded: {reason}"


def plan_run(
    script_args: R3ScriptArguments, training_args: R3Config, model_args: ModelConfig, state: PartialState
) -> dict:
    """`--dry-run`: load and check everything the run needs except the LLM weights (datasets, corpus or index and
    its tokenizer, LLM configs, tokenizers and prompt, writable outputs), and count what each stage will do.

    Every check runs even when an earlier one fails: what cannot be loaded (an unreachable Hub, a missing file) is
    one line each in `problems`, and what this machine cannot check (mixed precision without a GPU) is listed in
    `not_checked_here`."""
    problems: list[str] = []
    unchecked = list(script_args.dry_run_unchecked)

    def attempt(what: str, name, load):
        try:
            return load()
        except Exception as error:  # noqa: BLE001 - a dry run reports every failure and goes on
            problems.append(_load_problem(what, name, error))
            return None

    model = attempt("retriever", model_args.model_name_or_path, lambda: load_retriever(model_args.model_name_or_path))
    train = attempt(
        "training dataset",
        script_args.dataset_name,
        lambda: load_task_dataset(
            script_args, script_args.dataset_name, script_args.dataset_train_split, script_args.max_train_samples
        ),
    )
    plan: dict = {"train_questions": len(train) if train is not None else None}
    if script_args.eval_dataset_name:
        evaluation = attempt(
            "evaluation dataset",
            script_args.eval_dataset_name,
            lambda: load_task_dataset(
                script_args,
                script_args.eval_dataset_name,
                script_args.dataset_test_split,
                script_args.max_eval_samples,
            ),
        )
        plan["eval_questions"] = len(evaluation) if evaluation is not None else None
    if script_args.index:
        if model is None:
            unchecked.append(f"index {script_args.index}: needs the retriever's tokenizer, which did not load")
        else:
            index = attempt(
                "index",
                script_args.index,
                lambda: BagOfTokensIndex.from_pretrained(script_args.index, tokenizer=model.tokenizer),
            )
            plan["index_passages"] = len(index) if index is not None else None
    elif script_args.corpus:
        corpus = attempt(
            "corpus",
            script_args.corpus,
            lambda: load_table(script_args.corpus, script_args.corpus_split, config_name=script_args.corpus_config),
        )
        if corpus is not None and "text" not in corpus.column_names:
            raise ValueError(f"The corpus needs a 'text' column; it has {corpus.column_names}.")
        plan["index_passages"] = len(corpus) if corpus is not None else None
    else:
        raise ValueError("Pass --corpus (a file or Hub dataset of passages) or --index (a saved index).")
    for llm in script_args.reward_llms:
        path = resolve_model_path(llm)
        tokenizer = attempt(
            "reward LLM",
            llm,
            lambda path=path: (AutoConfig.from_pretrained(path), AutoTokenizer.from_pretrained(path)),
        )
        entry = {"llm": llm}
        if tokenizer is not None:
            tokenizer = tokenizer[1]
            template = CLOSED_SET_PROMPTS.get(script_args.task) or (
                CHAT_PROMPT if tokenizer.chat_template else OPENQA_PROMPT
            )
            prompt = template.format(paragraphs="p", question="q")
            entry["prompt_tokens_without_passage"] = len(tokenizer(prompt)["input_ids"])
        plan.setdefault("reward_llms", []).append(entry)
    for folder in (training_args.output_dir, script_args.index_output_dir):
        if folder:
            _check_writable(folder)
    batch = training_args.per_device_train_batch_size * state.num_processes * training_args.gradient_accumulation_steps
    plan.update(processes=state.num_processes, effective_batch_size=batch)
    if train is not None:
        steps_per_epoch = math.ceil(len(train) / batch)
        total = (
            training_args.max_steps
            if training_args.max_steps > 0
            else math.ceil(steps_per_epoch * training_args.num_train_epochs)
        )
        offline = min(total, math.ceil(steps_per_epoch * training_args.warmup_epochs_offline))
        on_policy_pairs = (total - offline) * batch * training_args.retrieval_top_k
        calibrating = script_args.calibrate or script_args.reward_threshold == "calibrated"
        plan.update(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            offline_steps=offline,
            on_policy_steps=total - offline,
            calibration_pairs=min(script_args.calibration_samples, len(train)) * script_args.calibration_top_k
            if calibrating
            else 0,
            reward_calls_without_cache=on_policy_pairs * len(script_args.reward_llms),
            # each (question, passage) scored once at best: the on-policy top-k of every question, once
            reward_calls_with_cache_at_least=min(on_policy_pairs, len(train) * training_args.retrieval_top_k)
            * len(script_args.reward_llms),
        )
    else:
        unchecked.append("step and reward-call counts: need the training dataset, which did not load")
    store = Path(training_args.reward_cache_dir or Path(training_args.output_dir, "reward_cache"))
    plan["reward_store_entries"] = len(RewardCache(store, writer=None)) if store.exists() else 0
    plan["not_checked_here"] = unchecked
    plan["problems"] = problems
    return plan


def report_plan(plan: dict) -> None:
    """Log a dry run's stage plan, then one line per problem and per check this machine could not make."""
    counts = {k: v for k, v in plan.items() if k not in ("problems", "not_checked_here")}
    logger.info("Dry run, nothing trained. Stage plan:\n" + json.dumps(counts, indent=2))
    for line in plan["not_checked_here"]:
        logger.warning(f"Not checked on this machine: {line}.")
    for line in plan["problems"]:
        logger.error(f"Problem: {line}")
    if plan["problems"]:
        logger.error(f"Dry run found {len(plan['problems'])} problem(s), listed above: fix them before the run.")
    else:
        logger.info("Dry run: every check passed.")


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


def main(script_args: R3ScriptArguments, training_args: R3Config, model_args: ModelConfig) -> R3Trainer | dict:
    if not script_args.dataset_name:
        raise ValueError("Pass --dataset-name: the training QA data (a local file or a Hub dataset id).")
    if not model_args.model_name_or_path:
        raise ValueError("Pass --model-name-or-path: the starting retriever (SIDR checkpoint or BERT-style encoder).")
    _ = training_args.device  # sets up the processes (backend, CPU or GPU) as Trainer would
    state = PartialState()
    if script_args.dry_run:
        plan = plan_run(script_args, training_args, model_args, state)
        report_plan(plan)
        return plan
    model = load_retriever(model_args.model_name_or_path)
    index = build_or_load_index(script_args, model, training_args.output_dir, state, bm25=training_args.needs_bm25)
    train_dataset = load_task_dataset(
        script_args, script_args.dataset_name, script_args.dataset_train_split, script_args.max_train_samples
    )
    eval_dataset = None
    if script_args.eval_dataset_name:
        eval_dataset = load_task_dataset(
            script_args, script_args.eval_dataset_name, script_args.dataset_test_split, script_args.max_eval_samples
        )
    threshold = script_args.reward_threshold
    rewards = [
        AnswerProbabilityReward(
            resolve_model_path(llm),
            threshold=threshold if threshold == "calibrated" else float(threshold),
            batch_size=script_args.reward_batch_size,
            max_new_tokens=script_args.reward_max_new_tokens,
            prompt_template=CLOSED_SET_PROMPTS.get(script_args.task),
        )
        for llm in script_args.reward_llms
    ]
    if script_args.calibrate or threshold == "calibrated":
        os.makedirs(training_args.output_dir, exist_ok=True)
        for i, (llm, reward) in enumerate(zip(script_args.reward_llms, rewards)):
            default = os.path.join(training_args.output_dir, f"calibration_{i}.jsonl")
            path = script_args.calibration_file if i == 0 and script_args.calibration_file else default
            calibrate(
                script_args,
                reward,
                model,
                index,
                train_dataset,
                path,
                state,
                pipeline=training_args.pipeline,
                reward_llm=str(llm),
            )
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


def run_from_command_line(args: list[str] | None = None) -> None:
    """`recipes/train.py` and `r3hf train`: parse the YAML and flags, run, and exit with status 1 when a dry run
    found problems (each already reported on one line). A launched run ends by destroying its process group once
    every process is done: a process that exits with it alive can abort in gloo's teardown (SIGABRT, "terminate called
    without an active exception") while the main process is still saving or pushing."""
    result = main(*make_parser().parse_args_and_config(args))
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
    if isinstance(result, dict) and result.get("problems"):
        sys.exit(1)


if __name__ == "__main__":
    run_from_command_line()
