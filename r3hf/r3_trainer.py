"""R3Trainer: on-policy retrieval, LLM rewards and reinforced contrastive learning on top of `transformers.Trainer`."""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from accelerate.utils import gather_object
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .evaluation import answer_recall_at_k, rag_accuracy
from .index import BagOfTokensIndex, _CSRIndex, vocabulary_fingerprint
from .losses import gather_with_grad, rcl_loss
from .modeling_sidr import SIDRModel
from .r3_config import R3Config
from .retrieval import retrieve
from .rewards import AnswerProbabilityReward, Calibration

RewardFunc = str | Callable[..., list[float | None]]


def _identity_collator(features: list[dict]) -> list[dict]:
    return features


def _reward_name(func) -> str:
    return getattr(func, "__name__", type(func).__name__)


class R3Trainer(Trainer):
    """Train a [`SIDRModel`] so that it retrieves the passages that make a given LLM answer correctly.

    Each step: encode the batch's questions; retrieve with the current weights (top-m by E(q)·T(d) from the fixed
    bag-of-tokens index, re-ranked to top-k by fresh E(q)·E(d)); reward every retrieved passage with the reward
    functions; take a random rewarded passage as positive and the first unrewarded one in rank order as hard negative
    (with fallbacks, see [`R3Config`]); minimise [`rcl_loss`] over the batch (gathered across processes).

    Args:
        model: A [`SIDRModel`], or the path / Hub id of one or of a BERT-style encoder to start from.
        args: An [`R3Config`].
        reward_funcs: One or more rewards: callables `f(queries=, passages=, answers=, **kwargs) -> list[float|None]`
            (passages are dicts with `id`, `title`, `text`; other dataset columns and `trainer_state` are passed as
            keyword arguments), or the path / Hub id of a causal LM, turned into an [`AnswerProbabilityReward`].
        train_dataset: A `datasets.Dataset` with `question` and `answers` columns (optionally `positive_ids`).
        eval_dataset: Same columns; evaluated with answer-recall@k and RAG accuracy.
        index: The [`BagOfTokensIndex`] of the corpus (built with the model's tokenizer).
        calibration: Offline [`Calibration`] (pools for warm-up and fallbacks); defaults to the first reward's.
        peft_config: A `peft` config to train LoRA adapters on the encoders instead of all weights.
        callbacks, optimizers: As for `transformers.Trainer`.
    """

    _tag_names = ["r3hf", "r3", "sidr", "retrieval", "rag"]

    def __init__(
        self,
        model: SIDRModel | str,
        args: R3Config | None = None,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | None = None,
        index: _CSRIndex | None = None,
        calibration: Calibration | None = None,
        peft_config=None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if isinstance(model, str | os.PathLike):
            from .data import load_retriever

            model = load_retriever(str(model))
        args = args or R3Config(output_dir=f"{Path(str(model.config.name_or_path or 'sidr')).name}-R3")
        if not isinstance(args, R3Config):
            raise TypeError("args must be an R3Config.")
        if not isinstance(index, BagOfTokensIndex):
            raise ValueError("R3Trainer needs index=BagOfTokensIndex.build(corpus, model.tokenizer).")
        if vocabulary_fingerprint(index.tokenizer) != vocabulary_fingerprint(model.tokenizer):
            raise ValueError("The index was built with a different tokenizer from the model's: rebuild the index.")
        if reward_funcs is None:
            raise ValueError("R3Trainer needs reward_funcs: a callable, a list of them, or an LLM path / Hub id.")
        reward_funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        self.reward_funcs = [
            AnswerProbabilityReward(f) if isinstance(f, str | os.PathLike) else f for f in reward_funcs
        ]
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
        self._row_of_id = (
            {str(i): row for row, i in enumerate(index.corpus["id"])} if "id" in index.corpus.column_names else {}
        )
        self._calibration_pools: dict[str, dict[int, list[int]]] = defaultdict(lambda: {0: [], 1: []})
        if calibration is not None:
            for record in calibration.records:
                self._calibration_pools[record["query"]][int(record["label"])] += self._rows([record["passage_id"]])
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
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
        if args.reward_cache_dir:
            self._load_reward_caches(Path(args.reward_cache_dir))

    # ------------------------------------------------------------------ helpers

    def _sidr(self, model=None) -> SIDRModel:
        model = self.accelerator.unwrap_model(model or self.model)
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _rows(self, passage_ids) -> list[int]:
        return [self._row_of_id[str(i)] for i in passage_ids or [] if str(i) in self._row_of_id]

    def _pool(self, question: str, example: dict, label: int, source: str = "offline") -> list[int]:
        """Corpus rows of the offline pool of a question (label 1: positives, 0: negatives). `source="offline"`: the
        calibration's pool, falling back to the gold `positive_ids` for positives; `"gold"`: gold positives only."""
        rows = [] if source == "gold" else self._calibration_pools.get(question, {}).get(label, [])
        if label == 1 and not rows:
            rows = self._rows(example.get("positive_ids"))
        return rows

    def _rewards(
        self, queries: list[str], passages: list[dict], answers: list, examples: list[dict]
    ) -> list[float | None]:
        """Combined reward per (query, passage): weighted mean of the non-None rewards, thresholded at 0.5."""
        extra = {k: [ex[k] for ex in examples] for k in examples[0] if k not in ("question", "answers")}
        per_func = []
        for func, weight in zip(self.reward_funcs, self.reward_weights):
            start = time.perf_counter()
            values = func(queries=queries, passages=passages, answers=answers, trainer_state=self.state, **extra)
            self._metrics["train"][f"profiling/reward/{_reward_name(func)}_s"].append(time.perf_counter() - start)
            if len(values) != len(queries):
                raise ValueError(
                    f"Reward {_reward_name(func)} returned {len(values)} values for {len(queries)} passages."
                )
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
            rerank_top_m=args.retrieval_top_m,
            query_embeds=query_embeds,
        )
        metrics["profiling/retrieval_s"].append(time.perf_counter() - start)
        ids = results.ids.tolist()
        flat_q, flat_p, flat_a, flat_ex = [], [], [], []
        for ex, row in zip(examples, ids):
            for d in row:
                flat_q.append(ex["question"])
                flat_p.append({"id": self.index.corpus[d].get("id", d), **self.index.corpus[d]})
                flat_a.append(ex["answers"])
                flat_ex.append(ex)
        start = time.perf_counter()
        labels = self._rewards(flat_q, flat_p, flat_a, flat_ex)
        metrics["profiling/reward_s"].append(time.perf_counter() - start)
        k = args.retrieval_top_k if ids else 0
        positives, negatives, online_pos = [], [], 0
        for qi, (ex, row) in enumerate(zip(examples, ids)):
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
        metrics["reward/top1"].append(sum(labels[i * k] == 1.0 for i in range(len(ids))) / max(1, len(ids)))
        metrics["frac_online_positive"].append(online_pos / len(examples))
        metrics["frac_reward_ignored"].append(labels.count(None) / max(1, len(labels)))
        for func in self.reward_funcs:
            if hasattr(func, "cache_hit_rate"):
                metrics[f"rewards/{_reward_name(func)}/cache_hit_rate"].append(func.cache_hit_rate)
        return positives, negatives

    def _sample_offline(self, sidr: SIDRModel, examples: list[dict], query_embeds: torch.Tensor):
        """Warm-up pairs: a random offline (or gold) positive, and an offline negative or the best bag-of-tokens
        match that is not a positive."""
        positives, negatives = [], []
        candidates = self.index.search(query_embeds, k=min(len(self.index), 8)).ids.tolist()
        for ex, cand in zip(examples, candidates):
            pos_pool = self._pool(ex["question"], ex, 1)
            neg_pool = [d for d in self._pool(ex["question"], ex, 0) if d not in pos_pool]
            positives.append(self._rng.choice(pos_pool) if pos_pool else None)
            negatives.append(
                self._rng.choice(neg_pool) if neg_pool else next((d for d in cand if d not in pos_pool), None)
            )
        return positives, negatives

    # ------------------------------------------------------------------ training step

    def compute_loss(self, model, inputs: list[dict], return_outputs: bool = False, num_items_in_batch=None):
        args, sidr = self.args, self._sidr(model)
        questions = [ex["question"] for ex in inputs]
        query_embeds = sidr.encode_queries(questions, batch_size=len(questions))
        online = (self.state.epoch or 0.0) >= args.warmup_epochs_offline
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
            )
        for name, value in parts.items():
            self._metrics["train"][f"loss/{name}"].append(value.item())
        self._metrics["train"]["online"].append(float(online))
        self._metrics["train"]["sparsity/query_active_dims"].append(
            (out.query_embeds > 0).sum(1).float().mean().item()
        )
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

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Answer-recall@k of late-parametric retrieval and RAG accuracy (the first reward's LLM, top-1 passage)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs an eval_dataset.")
        if len(dataset) == 0:
            raise ValueError("The eval_dataset is empty: pass at least one question with its answers.")
        args, sidr = self.args, self._sidr()
        answers = dataset["answers"]
        ks = sorted(set(args.eval_recall_at))
        generator = next((f for f in self.reward_funcs if isinstance(f, AnswerProbabilityReward)), None)
        generate = args.eval_rag_accuracy and generator is not None
        # each process retrieves (and generates) for its share of the questions; the shares are gathered in order
        passages, predictions = [], []
        with self.accelerator.split_between_processes(list(dataset["question"])) as questions:
            if questions:
                depth = min(max(ks), len(self.index))
                results = retrieve(sidr, questions, self.index, k=depth, rerank_top_m=max(args.retrieval_top_m, depth))
                passages = self.index.get_passages(results.ids)
                if generate:
                    predictions = generator.generate(questions, [ps[:1] for ps in passages])
        if self.accelerator.num_processes > 1:
            passages, predictions = gather_object(passages), gather_object(predictions)
        metrics = answer_recall_at_k(passages, answers, ks)
        if generate:
            metrics["rag_accuracy"] = rag_accuracy(predictions, answers)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        # Trainer.log directly: the pending training-step metrics belong to the next training log, whatever the prefix
        super().log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints, resume and cards

    def _state_path(self, folder: str | os.PathLike) -> Path:
        return Path(folder) / f"r3_state_rank{self.args.process_index}.json"

    def _save_reward_caches(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i, func in enumerate(self.reward_funcs):
            if getattr(func, "cache", None) is not None:
                func.save_cache(folder / f"reward_cache_{i}_rank{self.args.process_index}.json")

    def _load_reward_caches(self, folder: Path) -> None:
        for i, func in enumerate(self.reward_funcs):
            path = folder / f"reward_cache_{i}_rank{self.args.process_index}.json"
            if path.exists() and getattr(func, "cache", None) is not None:
                func.load_cache(path)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        state = self._rng.getstate()
        self._state_path(folder).write_text(json.dumps({"sampler_rng": [state[0], list(state[1]), state[2]]}))
        self._save_reward_caches(folder)
        if self.args.reward_cache_dir:
            self._save_reward_caches(Path(self.args.reward_cache_dir))
        if self.args.should_save:
            self.create_model_card()

    def _load_rng_state(self, checkpoint):
        super()._load_rng_state(checkpoint)
        if checkpoint is None or not self._state_path(checkpoint).exists():
            return
        state = json.loads(self._state_path(checkpoint).read_text())["sampler_rng"]
        self._rng.setstate((state[0], tuple(state[1]), state[2]))
        self._load_reward_caches(Path(checkpoint))

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        **kwargs,
    ) -> None:
        """Write `README.md` in `output_dir` from `model_cards/retriever_card.md`, with the run's settings and the
        last evaluation results."""
        if not self.is_world_process_zero():
            return
        from .hub import render_retriever_card

        card = render_retriever_card(self, model_name=model_name, dataset_name=dataset_name, tags=tags)
        card.save(os.path.join(self.args.output_dir, "README.md"))
