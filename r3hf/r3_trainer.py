"""R3Trainer: on-policy retrieval, LLM rewards and reinforced contrastive learning on top of `transformers.Trainer`."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from accelerate.utils import gather_object
from transformers import PreTrainedModel, Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from .evaluation import RAGEvaluator, has_answer
from .index import BagOfTokensIndex
from .losses import flops, gather_with_grad, rcl_loss
from .model_card import TAGS
from .modeling_sidr import SIDRModel
from .models import load_retriever
from .r3_config import R3Config
from .retrieval import first_stage_candidates, retrieve
from .rewards import AnswerProbabilityReward, Calibration, OfflinePools, RewardCache
from .utils import atomic_write_text, plain_passage_text, vocabulary_fingerprint

logger = logging.get_logger(__name__)

RewardFunc = str | os.PathLike | PreTrainedModel | Callable[..., list[float | None]]

# The stores trainers attached to rewards, as opposed to those users passed (which a trainer keeps).
_TRAINER_STORES: weakref.WeakSet[RewardCache] = weakref.WeakSet()


def _identity_collator(features: list[dict]) -> list[dict]:
    return features


def _as_reward(func: RewardFunc):
    """A reward callable from a callable, a causal LM, or the path / Hub id of one."""
    if isinstance(func, str | os.PathLike | PreTrainedModel):
        return AnswerProbabilityReward(func)
    if not callable(func):
        raise TypeError(f"A reward must be a callable, a causal LM or its path / Hub id; got {type(func).__name__}.")
    return func


class R3Trainer(Trainer):
    """Train a [`SIDRModel`] so that it retrieves the passages that make a given LLM answer correctly.

    Each step: encode the batch's questions; retrieve with the current weights (top-m by E(q)·T(d) from the fixed
    bag-of-tokens index, re-ranked to top-k by fresh E(q)·E(d)); reward every retrieved passage with the reward
    functions; take a random rewarded passage as positive and the first unrewarded one in rank order as hard negative
    (with fallbacks, see [`R3Config`]); minimise [`rcl_loss`] over the batch (gathered across processes). During the
    first `warmup_epochs_offline` epochs the pairs come from the offline pools instead (the paper's first stage).

    Args:
        model: A [`SIDRModel`], or the path / Hub id of one or of a BERT-style encoder to start from.
        reward_funcs: One reward or a list: callables `f(queries=, passages=, answers=, **kwargs) -> list[float|None]`
            (passages are dicts with `id`, `title`, `text`; the other dataset columns and `trainer_state` are passed as
            keyword arguments), loaded causal LMs, or the path / Hub id of one; an LM becomes an
            [`AnswerProbabilityReward`]. None with `args.offline_only`.
        args: An [`R3Config`]; defaults to one with `output_dir="<model name>-R3"`.
        train_dataset: A `datasets.Dataset` with `question` and `answers` columns (optionally `positive_ids`).
        eval_dataset: Same columns; evaluated by a [`RAGEvaluator`] (answer-recall@k, RAG accuracy).
        index: The [`BagOfTokensIndex`] of the corpus (built with the model's tokenizer).
        calibration: Offline [`Calibration`] (pools for the offline stage and fallbacks); defaults to the first
            reward's.
        callbacks, optimizers: As for `transformers.Trainer`.
        peft_config: A `peft` config to train LoRA adapters on the encoders instead of all weights.
    """

    _tag_names = TAGS

    def __init__(
        self,
        model: SIDRModel | str,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        args: R3Config | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        *,
        index: BagOfTokensIndex,
        calibration: Calibration | None = None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
    ):
        if isinstance(model, str | os.PathLike):
            model = load_retriever(str(model))
        args = args or R3Config(output_dir=f"{Path(str(model.config.name_or_path or 'sidr')).name}-R3")
        if not isinstance(args, R3Config):
            raise TypeError("args must be an R3Config.")
        if not isinstance(index, BagOfTokensIndex):
            raise ValueError("R3Trainer needs index=BagOfTokensIndex.build(corpus, model.tokenizer).")
        if vocabulary_fingerprint(index.tokenizer) != vocabulary_fingerprint(model.tokenizer):
            raise ValueError("The index was built with a different tokenizer from the model's: rebuild the index.")
        if args.needs_bm25:
            index.require_bm25()
        if (reward_funcs is None or reward_funcs == []) and not args.offline_only:
            raise ValueError(
                "R3Trainer needs reward_funcs (a callable, a causal LM or its path / Hub id, or a list), unless "
                "args.offline_only=True trains on offline pairs alone."
            )
        reward_funcs = (
            [] if reward_funcs is None else reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        )
        self.reward_funcs = [_as_reward(f) for f in reward_funcs]
        self.reward_func_names = [getattr(f, "__name__", type(f).__name__) for f in self.reward_funcs]
        weights = args.reward_weights or [1.0] * len(self.reward_funcs)
        if len(weights) != len(self.reward_funcs):
            raise ValueError(f"{len(weights)} reward_weights for {len(self.reward_funcs)} reward functions.")
        self.reward_weights = [float(w) for w in weights]
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if ds is not None and not {"question", "answers"} <= set(ds.column_names):
                raise ValueError(f"{name} needs 'question' and 'answers' columns; it has {ds.column_names}.")
        if calibration is None:
            calibration = next(
                (getattr(f, "calibration", None) for f in self.reward_funcs if getattr(f, "calibration", None)), None
            )
        self.index = index
        self.calibration = calibration
        self._calibration_pools = OfflinePools(calibration, index) if calibration is not None else None
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._evaluators: dict[int, tuple[datasets.Dataset, RAGEvaluator]] = {}
        self._rng = random.Random(args.seed)
        if args.max_query_length:
            model.config.query_max_length = args.max_query_length
        if args.max_passage_length:
            model.config.passage_max_length = args.max_passage_length
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        super().__init__(
            model=model,
            args=args,
            data_collator=_identity_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=model.tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.model_accepts_loss_kwargs = False
        self._attach_reward_cache(Path(args.reward_cache_dir or Path(args.output_dir, "reward_cache")))

    # ------------------------------------------------------------------ helpers

    def _sidr(self, model=None) -> SIDRModel:
        model = self.accelerator.unwrap_model(model or self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _rows(self, passage_ids) -> list[int]:
        return [int(r) for r in self.index.rows_of(passage_ids or []) if r >= 0]

    def _pool(self, question: str, example: dict, label: int, source: str = "offline") -> list[int]:
        """Corpus rows of the offline pool of a question (label 1: positives, 0: negatives). `source="offline"`: the
        calibration's pool, falling back to the gold `positive_ids` for positives; `"gold"`: gold positives only."""
        pools = self._calibration_pools
        rows = pools.rows(question, label) if pools is not None and source != "gold" else []
        if label == 1 and not rows:
            rows = self._rows(example.get("positive_ids"))
        return rows

    def _rewards(
        self, queries: list[str], passages: list[dict], answers: list, examples: list[dict]
    ) -> list[float | None]:
        """Combined reward per (query, passage): weighted mean of the non-None rewards, thresholded at 0.5."""
        extra = {k: [ex[k] for ex in examples] for k in examples[0] if k not in ("question", "answers")}
        per_func = []
        for func, name, weight in zip(self.reward_funcs, self.reward_func_names, self.reward_weights):
            start = time.perf_counter()
            values = func(queries=queries, passages=passages, answers=answers, trainer_state=self.state, **extra)
            self._metrics["train"][f"profiling/reward/{name}_s"].append(time.perf_counter() - start)
            if len(values) != len(queries):
                raise ValueError(f"Reward {name} returned {len(values)} values for {len(queries)} passages.")
            per_func.append((weight, values))
        labels = []
        for i in range(len(queries)):
            scored = [(w, v[i]) for w, v in per_func if v[i] is not None and not math.isnan(v[i])]
            if not scored:
                labels.append(None)
            else:
                mean = sum(w * v for w, v in scored) / sum(w for w, _ in scored)
                labels.append(1.0 if mean >= 0.5 else 0.0)
        return labels

    def _sample_online(self, sidr: SIDRModel, examples: list[dict], query_embeds: torch.Tensor):
        """Late-parametric retrieval with the current weights, rewards, then positive / hard-negative sampling."""
        args, metrics = self.args, self._metrics["train"]
        questions = [ex["question"] for ex in examples]
        start = time.perf_counter()
        results = retrieve(
            sidr,
            questions,
            self.index,
            k=args.retrieval_top_k,
            rerank_top_m=args.rerank_top_m,
            query_embeds=query_embeds,
            **args.pipeline,
        )
        metrics["profiling/retrieval_s"].append(time.perf_counter() - start)
        rows = results.rows.tolist()
        flat_q, flat_p, flat_a, flat_ex = [], [], [], []
        for ex, row in zip(examples, rows):
            for d in row:
                flat_q.append(ex["question"])
                flat_p.append({"id": self.index.corpus[d].get("id", d), **self.index.corpus[d]})
                flat_a.append(ex["answers"])
                flat_ex.append(ex)
        start = time.perf_counter()
        labels = self._rewards(flat_q, flat_p, flat_a, flat_ex)
        metrics["profiling/reward_s"].append(time.perf_counter() - start)
        k = args.retrieval_top_k if rows else 0
        positives, negatives, online_pos = [], [], 0
        for qi, (ex, row) in enumerate(zip(examples, rows)):
            row_labels = labels[qi * len(row) : (qi + 1) * len(row)]
            rewarded = [d for d, lab in zip(row, row_labels) if lab == 1.0]
            negative = next((d for d, lab in zip(row, row_labels) if lab == 0.0), None)
            online_pos += bool(rewarded)
            if not rewarded and args.positive_fallback != "skip":
                rewarded = self._pool(ex["question"], ex, 1, args.positive_fallback)
            if negative is None:
                pool = [d for d in self._pool(ex["question"], ex, 0) if d not in rewarded]
                negative = self._rng.choice(pool) if pool else None
            positives.append(self._rng.choice(rewarded) if rewarded else None)
            negatives.append(negative)
        scored = [lab for lab in labels if lab is not None]
        metrics["reward"].append(sum(scored) / len(scored) if scored else float("nan"))
        metrics["reward/top1"].append(sum(labels[i * k] == 1.0 for i in range(len(rows))) / max(1, len(rows)))
        metrics["frac_online_positive"].append(online_pos / len(examples))
        metrics["frac_reward_ignored"].append(labels.count(None) / max(1, len(labels)))
        for func, name in zip(self.reward_funcs, self.reward_func_names):
            if hasattr(func, "cache_hit_rate"):
                metrics[f"rewards/{name}/cache_hit_rate"].append(func.cache_hit_rate)
        return positives, negatives

    def _sample_offline(self, sidr: SIDRModel, examples: list[dict], query_embeds: torch.Tensor):
        """Warm-up pairs: a random offline (or gold) positive, and an offline negative or, as DPR mines them, the best
        first-stage match (bag-of-tokens, bm25s or their union, as `negative_first_stage`, else `first_stage`, says)
        that is neither a positive nor contains a gold answer."""
        positives, negatives = [], []
        questions = [ex["question"] for ex in examples]
        first_stage = self.args.negative_first_stage or self.args.first_stage
        rows, _, _ = first_stage_candidates(self.index, questions, query_embeds, 8, first_stage)
        candidates = [[r for r in row if r >= 0] for row in rows.tolist()]
        for ex, cand in zip(examples, candidates):
            pos_pool = self._pool(ex["question"], ex, 1)
            neg_pool = [d for d in self._pool(ex["question"], ex, 0) if d not in pos_pool]
            positives.append(self._rng.choice(pos_pool) if pos_pool else None)
            if neg_pool:
                negatives.append(self._rng.choice(neg_pool))
                continue
            mined = zip(cand, self.index.get_passages(cand))
            answers = ex["answers"]
            # A closed-set answer (a choice index) is not in passages: its negatives come from the offline pools,
            # and a mined one is the best candidate that is not a positive.
            closed_set = "choices" in ex
            negatives.append(
                next(
                    (
                        d
                        for d, p in mined
                        if d not in pos_pool and (closed_set or not has_answer(plain_passage_text(p), answers))
                    ),
                    None,
                )
            )
        return positives, negatives

    def _bm25_scores(self, questions: list[str], rows: list[int], n: int) -> torch.Tensor:
        """BM25 scores of every query of the step against every passage, all processes' queries and passages
        (positives first, then hard negatives) laid out as the gathered embeddings are."""
        gather = self.accelerator.gather if self.args.gather_across_processes else (lambda t: t)
        local = torch.tensor(rows, device=self.accelerator.device)
        passages = torch.cat([gather(local[:n]), gather(local[n:])]).tolist()
        scores = self.index.require_bm25().score_rows(questions, passages)
        return gather(scores.to(self.accelerator.device))

    # ------------------------------------------------------------------ training step

    def compute_loss(self, model, inputs: list[dict], return_outputs: bool = False, num_items_in_batch=None):
        args, sidr = self.args, self._sidr(model)
        questions = [ex["question"] for ex in inputs]
        query_embeds = sidr.encode_query(questions, batch_size=len(questions), convert_to_sparse_tensor=False)
        online = not args.offline_only and (self.state.epoch or 0.0) >= args.warmup_epochs_offline
        sample = self._sample_online if online else self._sample_offline
        positives, negatives = sample(sidr, inputs, query_embeds)
        valid = [p is not None and n is not None for p, n in zip(positives, negatives)]
        self._metrics["train"]["frac_skipped"].append(1 - sum(valid) / len(valid))
        # Queries without a pair still go through the model (masked out of the loss), so every process runs the same
        # graph and tensors have the same shape for the gather.
        filler = next((p for p in positives if p is not None), 0)
        rows = [p if v else filler for p, v in zip(positives, valid)] + [
            n if v else filler for n, v in zip(negatives, valid)
        ]
        passages = self.index.get_passages(rows)
        q = sidr.tokenize(questions, "query")
        d = sidr.tokenize(passages, "passage")
        out = model(
            query_input_ids=q["input_ids"],
            query_attention_mask=q["attention_mask"],
            passage_input_ids=d["input_ids"],
            passage_attention_mask=d["attention_mask"],
        )
        n = len(questions)
        valid_t = torch.tensor(valid, device=out.query_embeds.device)
        gather = gather_with_grad if args.gather_across_processes else (lambda t: t)
        q_e, q_b, valid_g = gather(out.query_embeds), gather(out.query_bag_of_tokens), gather(valid_t)
        d_e = torch.cat([gather(out.passage_embeds[:n]), gather(out.passage_embeds[n:])])
        d_b = torch.cat([gather(out.passage_bag_of_tokens[:n]), gather(out.passage_bag_of_tokens[n:])])
        if not valid_g.any():
            loss = (out.query_embeds.sum() + out.passage_embeds.sum()) * 0.0
            parts = {}
        else:
            loss, parts = rcl_loss(
                q_e,
                q_b,
                d_e,
                d_b,
                valid=valid_g,
                parametric_weight=args.parametric_loss_weight,
                semi_parametric_weight=args.semi_parametric_loss_weight,
                temperature=args.temperature,
                bm25_scores=self._bm25_scores(questions, rows, n) if args.bm25_residual_weight else None,
                bm25_residual_weight=args.bm25_residual_weight,
            )
            if args.flops_weight and valid_t.any():
                pair_valid = torch.cat([valid_t, valid_t])
                parts["flops"] = flops(out.query_embeds[valid_t]) + flops(out.passage_embeds[pair_valid])
                loss = loss + args.flops_weight * parts["flops"]
        for name, value in parts.items():
            self._metrics["train"][f"loss/{name}"].append(value.item())
        self._metrics["train"]["online"].append(float(online))
        for side, embeds in (("query", out.query_embeds), ("passage", out.passage_embeds)):
            self._metrics["train"][f"sparsity/{side}_active_dims"].append((embeds > 0).sum(1).float().mean().item())
        return (loss, out) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the step metrics gathered since the last log to the Trainer's logs, averaged over steps and over
        processes (so every rank logs the same numbers). Evaluation logs bypass this (see `evaluate`)."""
        local = {}
        for key, values in self._metrics["train"].items():
            finite = [v for v in values if not math.isnan(v)]
            if finite:
                local[key] = sum(finite) / len(finite)
        self._metrics["train"].clear()
        per_rank = gather_object([local]) if self.accelerator.num_processes > 1 else [local]
        for key in sorted({k for rank in per_rank for k in rank}):
            values = [rank[key] for rank in per_rank if key in rank]
            logs[key] = sum(values) / len(values)
        super().log(logs, start_time)

    # ------------------------------------------------------------------ evaluation

    def evaluator(self, dataset: datasets.Dataset) -> RAGEvaluator:
        """The [`RAGEvaluator`] of an evaluation dataset (kept, so the reader's generations are cached across
        evaluations): answer-recall@`eval_recall_at` and, with `eval_rag_accuracy`, RAG accuracy@`eval_rag_contexts` with the first
        [`AnswerProbabilityReward`]'s LLM."""
        if id(dataset) not in self._evaluators:
            reward = next((f for f in self.reward_funcs if isinstance(f, AnswerProbabilityReward)), None)
            reader = reward.reader if reward is not None else None
            evaluator = RAGEvaluator.from_dataset(
                dataset,
                self.index,
                reader=reader if self.args.eval_rag_accuracy else None,
                recall_at=self.args.eval_recall_at,
                rag_contexts=self.args.eval_rag_contexts,
                rerank_top_m=self.args.rerank_top_m,
                **self.args.pipeline,
            )
            # the dataset is kept with its evaluator, so its id cannot be reused by another dataset
            self._evaluators[id(dataset)] = (dataset, evaluator)
        return self._evaluators[id(dataset)][1]

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate the retriever with [`~R3Trainer.evaluator`], each process taking its share of the questions; the
        per-question results go to `<output_dir>/eval/predictions.jsonl`."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs an eval_dataset.")
        evaluator = self.evaluator(dataset)
        with self.accelerator.split_between_processes(list(range(len(dataset)))) as rows:
            records = evaluator.predict(self._sidr(), rows)
        if self.accelerator.num_processes > 1:
            records = gather_object(records)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in evaluator.compute_metrics(records).items()}
        if self.is_world_process_zero():
            folder = Path(self.args.output_dir, "eval")
            evaluator.save_predictions(records, folder)
            evaluator.save_metrics(metrics, folder, self.state.epoch or 0, self.state.global_step)
        # Trainer.log directly: the pending training-step metrics belong to the next training log, whatever the prefix
        super().log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints, resume and cards

    def _state_path(self, folder: str | os.PathLike) -> Path:
        return Path(folder) / f"r3_state_rank{self.args.process_index}.json"

    def _attach_reward_cache(self, folder: Path) -> None:
        """Move the in-memory score caches of the rewards into the append-only store in `folder`, this process
        writing its own segment; every segment already there (any earlier run, any number of processes) is read.

        A reward that an earlier trainer attached to another folder (one reward object reused for a second stage) is
        moved to this one, so each run's scores land in its own store; a store passed by the user is kept."""
        caching = [
            f
            for f in self.reward_funcs
            if isinstance(getattr(f, "cache", None), dict)
            or (getattr(f, "cache", None) in _TRAINER_STORES and f.cache.folder.resolve() != folder.resolve())
        ]
        if caching:
            store = RewardCache(folder, writer=f"rank{self.args.process_index}")
            _TRAINER_STORES.add(store)
            for func in caching:
                if isinstance(func.cache, dict):
                    store.update(func.cache.items())
                else:
                    func.cache.flush()
                func.cache = store
            store.flush()

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        state = self._rng.getstate()
        self._state_path(folder).write_text(json.dumps({"sampler_rng": [state[0], list(state[1]), state[2]]}))
        if self.args.should_save:
            self.create_model_card()

    def _load_rng_state(self, checkpoint):
        super()._load_rng_state(checkpoint)
        if checkpoint is None or not self._state_path(checkpoint).exists():
            return
        state = json.loads(self._state_path(checkpoint).read_text())["sampler_rng"]
        self._rng.setstate((state[0], tuple(state[1]), state[2]))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Save as `Trainer` does, with the training arguments as JSON instead of a pickle (`training_args.bin`), so
        that everything published loads without unpickling."""
        super()._save(output_dir, state_dict)
        output_dir = output_dir or self.args.output_dir
        if self.args.should_save:
            Path(output_dir, TRAINING_ARGS_NAME).unlink(missing_ok=True)
            atomic_write_text(Path(output_dir, "training_args.json"), self.args.to_json_string())

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        **kwargs,
    ) -> None:
        """Record the run (base retriever, reward LLM, data, settings, last evaluation) in the model's
        `model_card_data`, and write its card to `output_dir/README.md`; `save_pretrained` and `push_to_hub` then
        carry the same card."""
        args, sidr = self.args, self._sidr()
        reward = self.reward_funcs[0]
        llm = getattr(getattr(reward, "model", None), "name_or_path", None)
        eval_results = {}
        for entry in self.state.log_history:
            eval_results.update({k: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, float)})
        names = (
            "learning_rate",
            "per_device_train_batch_size",
            "num_train_epochs",
            "max_steps",
            "warmup_epochs_offline",
            "first_stage",
            "negative_first_stage",
            "fusion",
            "fusion_weight",
            "rerank_top_m",
            "retrieval_top_k",
            "parametric_loss_weight",
            "semi_parametric_loss_weight",
            "temperature",
            "bm25_residual_weight",
            "flops_weight",
            "positive_fallback",
            "seed",
        )
        sidr.model_card_data = dataclasses.replace(
            sidr.model_card_data,
            reward_llm=llm or self.reward_func_names[0],
            threshold=getattr(reward, "threshold", None),
            dataset_name=dataset_name or sidr.model_card_data.dataset_name,
            num_passages=len(self.index),
            rerank_top_m=args.rerank_top_m,
            retrieval_top_k=args.retrieval_top_k,
            eval_results=eval_results,
            hyperparameters={**{name: getattr(args, name) for name in names}, "world_size": args.world_size},
            repo_id=args.hub_model_id,
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            model_name=model_name or Path(os.path.normpath(args.output_dir)).name,
        )
        if self.is_world_process_zero():
            sidr.create_model_card().save(os.path.join(args.output_dir, "README.md"))
