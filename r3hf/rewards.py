"""The RAG environment: how likely a frozen LLM is to answer correctly with one retrieved passage in context.

`AnswerProbabilityReward` scores P(gold answer | prompt(query, passage)) with one teacher-forced forward pass, and turns
the score into a binary reward with a global threshold or with per-query thresholds calibrated offline against real
generation. It is a plain callable in the TRL reward-function style.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import datasets
import pyarrow.compute as pc
import torch
from accelerate.utils import find_executable_batch_size
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging

from .evaluation import has_answer
from .reward_cache import RewardCache, reward_key
from .utils import atomic_path, iter_batches

logger = logging.get_logger(__name__)
T = TypeVar("T")

# Self-RAG / OpenRAG open-QA prompt (OpenRAG App. H), for base models.
OPENQA_PROMPT = "### Paragraph:\n{paragraphs}\n### Instruction:\n{question}\n### Response:\n"
# The same content as a user turn, for instruct models with a chat template.
CHAT_PROMPT = "Answer the question using the paragraph. Reply with the answer only.\n\nParagraph:\n{paragraphs}\n\nQuestion: {question}"


def format_paragraphs(passages: Sequence) -> str:
    """`[1] title\\ntext` blocks, one per passage (strings or `{"title","text"}` dicts)."""
    blocks = []
    for i, p in enumerate(passages, 1):
        if isinstance(p, str):
            blocks.append(f"[{i}] {p}")
        else:
            title = p.get("title") or ""
            blocks.append(f"[{i}] {title}\n{p['text']}" if title else f"[{i}] {p['text']}")
    return "\n".join(blocks)


@dataclass
class Calibration:
    """Offline calibration of the answer-probability proxy against real generation (OpenRAG §3.2).

    Attributes:
        records: One row per (query, passage): `query`, `passage_id`, `score`, `label` (1 if the greedy generation
            contains a gold answer), `generation`.
        thresholds: Per query with both pools non-empty: `max_negative` (best score of a passage whose generation was
            wrong) and `min_positive` (worst score of one whose generation was right).
    """

    records: datasets.Dataset
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: datasets.Dataset | list[dict]) -> Calibration:
        records = records if isinstance(records, datasets.Dataset) else datasets.Dataset.from_list(records)
        if len(records) == 0:
            return cls(records, {})
        # Grouped in Arrow, not row by row in Python: a paper-scale calibration has millions of records.
        table = records.select_columns(["query", "label", "score"]).with_format("arrow")[:]
        positive = pc.not_equal(table["label"], 0)
        best_negative = table.filter(pc.invert(positive)).group_by("query").aggregate([("score", "max")])
        worst_positive = table.filter(positive).group_by("query").aggregate([("score", "min")])
        both = best_negative.join(
            worst_positive, "query", join_type="inner"
        )  # an empty pool: discarded, as in the paper
        thresholds = {
            q: {"max_negative": hi, "min_positive": lo}
            for q, hi, lo in zip(
                both["query"].to_pylist(), both["score_max"].to_pylist(), both["score_min"].to_pylist()
            )
        }
        return cls(records, thresholds)

    def label(self, query: str, score: float) -> float | None:
        """1.0 above the query's best offline negative, 0.0 below its worst offline positive, else None."""
        t = self.thresholds.get(query)
        if t is None:
            return None
        if score > t["max_negative"]:
            return 1.0
        if score < t["min_positive"]:
            return 0.0
        return None

    def global_threshold(self) -> float:
        """The single threshold on the score that best agrees with the generation labels of all records (F1 of the
        positive class, ties to the higher threshold): for `threshold=` when per-query thresholds leave too many
        queries without a label."""
        scores = torch.tensor(self.records["score"], dtype=torch.float64)
        labels = torch.tensor(self.records["label"], dtype=torch.bool)
        if not labels.any():
            raise ValueError("No record has a correct generation: calibrate on more queries or passages.")
        candidates = scores.unique()
        predicted = scores[None, :] >= candidates[:, None]
        tp = (predicted & labels).sum(1).double()
        f1 = 2 * tp / (predicted.sum(1) + labels.sum())
        best = f1.max()
        return candidates[(f1 == best).nonzero().max()].item()

    def positives(self, query: str) -> list[str]:
        """Passage ids of the query's offline positive pool."""
        table = self.records.select_columns(["query", "label", "passage_id"]).with_format("arrow")[:]
        mask = pc.and_(pc.equal(table["query"], query), pc.not_equal(table["label"], 0))
        return table.filter(mask)["passage_id"].to_pylist()

    def save(self, path: str | os.PathLike) -> None:
        """Write the records as JSON Lines, atomically."""
        with atomic_path(path) as tmp:
            self.records.to_json(str(tmp), lines=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        return cls.from_records(datasets.Dataset.from_json(str(path)))


class AnswerProbabilityReward:
    """Reward = does the LLM answer correctly with this passage, judged by P(gold answer | prompt) in one pass.

    Args:
        model: A causal LM, or the Hub id / local folder of one (a PEFT adapter folder works too).
        tokenizer: Its tokenizer; defaults to the model's.
        prompt_template: A template with `{paragraphs}` and `{question}`. Defaults to the OpenRAG open-QA prompt, or,
            for tokenizers with a chat template, the same content as a user turn.
        use_chat_template: Wrap the prompt with the tokenizer's chat template; defaults to whether it has one.
        threshold: A global probability threshold (reward 1 if the score reaches it), or `"calibrated"` for the
            per-query thresholds of `calibration` (see [`Calibration.label`]).
        length_normalize: Score with the geometric mean of the answer tokens' probabilities instead of their product.
        batch_size: Sequences per forward pass.
        max_length: Longest prompt + answer, in tokens; the passage is cut to fit, never the question or the answer.
        max_new_tokens: Length of greedy generations (RAG accuracy, offline labels) unless a call says otherwise:
            100, the paper's setting for free-form answers. A chatty small reader often states its answer after a
            sentence of preamble, so much shorter generations cut answers off (`benchmarks/bench_reader.py`).
        device, dtype: Where and in which precision to run the model (default: CUDA if available; fp32 on CPU,
            bf16 on GPU).
        cache: Keep scores keyed by (LLM, prompt settings, query, passage, answers) so no pair is scored twice: `True`
            (default) in memory, a [`RewardCache`] to share them across processes and runs, or `False`.
        calibration: A [`Calibration`] (or the path of one saved with `save`) for `threshold="calibrated"`.
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel,
        tokenizer=None,
        prompt_template: str | None = None,
        use_chat_template: bool | None = None,
        threshold: float | str = 0.65,
        length_normalize: bool = False,
        batch_size: int = 8,
        max_length: int = 1024,
        max_new_tokens: int = 100,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        cache: bool | RewardCache = True,
        calibration: Calibration | str | os.PathLike | None = None,
    ):
        if isinstance(threshold, str) and threshold != "calibrated":
            raise ValueError(f"threshold must be a number or 'calibrated', got {threshold!r}.")
        if not isinstance(threshold, str) and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"A probability threshold must lie in [0, 1], got {threshold}.")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        if isinstance(model, str | os.PathLike):
            path = str(model)
            if os.path.exists(os.path.join(path, "adapter_config.json")):
                from peft import AutoPeftModelForCausalLM

                model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=dtype)
            else:
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
        elif tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(model.config._name_or_path)
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        self.use_chat_template = (
            tokenizer.chat_template is not None if use_chat_template is None else use_chat_template
        )
        self.prompt_template = prompt_template or (CHAT_PROMPT if self.use_chat_template else OPENQA_PROMPT)
        self.threshold = threshold
        self.length_normalize = length_normalize
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.cache: dict[bytes, float] | RewardCache | None = (
            cache if isinstance(cache, RewardCache) else {} if cache else None
        )
        self.cache_hits = 0
        self.cache_lookups = 0
        if calibration is not None and not isinstance(calibration, Calibration):
            calibration = Calibration.load(calibration)
        self.calibration = calibration
        self.__name__ = "answer_probability"

    # ------------------------------------------------------------------ prompts

    def build_prompt(self, query: str, passages: Sequence) -> str:
        """The prompt text for a query with its passages in context, chat template applied when in use."""
        text = self.prompt_template.format(paragraphs=format_paragraphs(passages), question=query)
        if self.use_chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def _prompt_ids(self, query: str, passages: Sequence, budget: int) -> list[int]:
        """Token ids of the prompt, the passages cut from the end until it fits in `budget` tokens."""
        add_special = not self.use_chat_template  # a chat template already writes its special tokens
        ids = self.tokenizer(self.build_prompt(query, passages), add_special_tokens=add_special)["input_ids"]
        if len(ids) <= budget:
            return ids
        empty = [{"title": "", "text": ""} for _ in passages]
        overhead = len(self.tokenizer(self.build_prompt(query, empty), add_special_tokens=add_special)["input_ids"])
        if overhead >= budget:
            raise ValueError(
                f"The prompt without passages takes {overhead} tokens, over max_length: raise max_length."
            )
        per_passage = max(1, (budget - overhead) // max(1, len(passages)))
        while True:
            cut = []
            for p in passages:
                text = p if isinstance(p, str) else p["text"]
                tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"][:per_passage]
                short = self.tokenizer.decode(tokens)
                cut.append(short if isinstance(p, str) else {**p, "text": short})
            ids = self.tokenizer(self.build_prompt(query, cut), add_special_tokens=add_special)["input_ids"]
            if len(ids) <= budget or per_passage == 1:
                return ids[:budget]
            per_passage = max(1, per_passage - (len(ids) - budget))

    # ------------------------------------------------------------------ scoring

    def _with_batch_size(self, run: Callable[[int], T]) -> T:
        """`run(batch_size)`, retried with smaller batches after an out-of-memory error (accelerate's
        `find_executable_batch_size`), so a long run slows down instead of crashing; the size that fits is kept."""

        @find_executable_batch_size(starting_batch_size=self.batch_size)
        def attempt(batch_size: int) -> T:
            result = run(batch_size)
            if batch_size < self.batch_size:
                logger.warning(
                    f"Out of memory with {self.batch_size} sequences per pass: the reward now uses {batch_size}."
                )
                self.batch_size = batch_size
            return result

        return attempt()

    def _log_probs(self, sequences: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Sum of log P(alias tokens | prompt) for each alias of each (prompt_ids, [alias_ids, ...]) item."""
        return self._with_batch_size(lambda batch_size: self._log_probs_in_batches(sequences, batch_size))

    @torch.no_grad()
    def _log_probs_in_batches(
        self, sequences: list[tuple[list[int], list[list[int]]]], batch_size: int
    ) -> list[list[float]]:
        """[`_log_probs`] with `batch_size` sequences per forward pass.

        The aliases of an item share one forward pass: the row is the prompt followed by every alias, each alias
        attending to the prompt and to itself only (a 4D mask) and positioned right after the prompt, so it scores
        exactly as `prompt + alias` alone would. Rows are right-padded by hand, so results depend neither on the
        tokenizer's padding side nor on what else is in the batch."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]) - sum(map(len, sequences[i][1])))
        out: list[list[float]] = [[] for _ in sequences]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dtype = next(self.model.parameters()).dtype
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(sequences[i][0]) + sum(map(len, sequences[i][1])) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            position_ids = torch.zeros((len(chunk), width), dtype=torch.long)
            allowed = torch.zeros((len(chunk), width, width), dtype=torch.bool)
            allowed[:, :, 0] = True  # padding rows attend somewhere, so no row of the softmax is empty
            targets = []  # per row: (logit position, target token, alias number) for every alias token
            for row, i in enumerate(chunk):
                prompt, aliases = sequences[i]
                n = len(prompt)
                input_ids[row, :n] = torch.tensor(prompt)
                position_ids[row, :n] = torch.arange(n)
                allowed[row, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
                offset, row_targets = n, []
                for a, alias in enumerate(aliases):
                    m = len(alias)
                    seg = slice(offset, offset + m)
                    input_ids[row, seg] = torch.tensor(alias)
                    position_ids[row, seg] = torch.arange(n, n + m)
                    allowed[row, seg, :n] = True
                    allowed[row, seg, seg] = torch.ones(m, m, dtype=torch.bool).tril()
                    # token t of the alias is predicted at the prompt's last position (t = 0) or at alias token t-1
                    row_targets += [(n - 1 if t == 0 else offset + t - 1, tok, a) for t, tok in enumerate(alias)]
                    offset += m
                targets.append(row_targets)
            mask = torch.zeros((len(chunk), 1, width, width), dtype=dtype)
            mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
            first = min(len(sequences[i][0]) for i in chunk) - 1
            logits = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=position_ids.to(self.device),
                logits_to_keep=width - first,
            ).logits.float()
            for row, i in enumerate(chunk):
                pos, tok, alias = (torch.tensor(x) for x in zip(*targets[row]))
                log_probs = logits[row, pos.to(self.device) - first].log_softmax(-1)
                token_lp = log_probs.gather(1, tok[:, None].to(self.device))[:, 0].double().cpu()
                sums = torch.zeros(len(sequences[i][1]), dtype=torch.float64).index_add_(0, alias, token_lp)
                lengths = torch.tensor([len(a) for a in sequences[i][1]], dtype=torch.float64)
                out[i] = (sums / lengths if self.length_normalize else sums).tolist()
        return out

    def _cache_key(self, query: str, passage, answers: Sequence[str]) -> bytes:
        return reward_key(
            self.model.config._name_or_path,
            self.prompt_template,
            self.use_chat_template,
            self.max_length,
            self.length_normalize,
            query,
            passage,
            list(answers),
        )

    def score(self, queries: Sequence[str], passages: Sequence, answers: Sequence[Sequence[str] | str]) -> list[float]:
        """P(gold answer | prompt(query, passage)) for each (query, passage, answers) triple, best alias kept.

        Args:
            queries: Questions.
            passages: One passage per question (a string or a `{"title","text"}` dict).
            answers: Per question, its gold answer aliases (or one string).

        Returns:
            Probabilities in [0, 1] (geometric means per token with `length_normalize=True`).
        """
        if not (len(queries) == len(passages) == len(answers)):
            raise ValueError(
                f"queries, passages and answers differ in length: {len(queries)}, {len(passages)}, {len(answers)}."
            )
        answers = [[a] if isinstance(a, str) else list(a) for a in answers]
        for i, aliases in enumerate(answers):
            if not aliases or not all(isinstance(a, str) and a.strip() for a in aliases):
                raise ValueError(
                    f"Question {i} has no usable gold answer ({aliases!r}): give at least one non-empty string."
                )
        results: list[float | None] = [None] * len(queries)
        todo: list[int] = []
        keys = (
            [self._cache_key(q, p, a) for q, p, a in zip(queries, passages, answers)]
            if self.cache is not None
            else None
        )
        if keys is None:
            cached = {}
        elif isinstance(self.cache, RewardCache):
            cached = self.cache.get_many(keys)
        else:
            cached = {k: self.cache[k] for k in keys if k in self.cache}
        for i in range(len(queries)):
            if keys is not None and keys[i] in cached:
                results[i] = cached[keys[i]]
                self.cache_hits += 1
            else:
                todo.append(i)
        self.cache_lookups += len(queries) if keys is not None else 0
        sequences = []
        for i in todo:
            aliases = [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in dict.fromkeys(answers[i])]
            budget = self.max_length - max(map(len, aliases))
            sequences.append((self._prompt_ids(queries[i], [passages[i]], budget), aliases))
        for i, log_probs in zip(todo, self._log_probs(sequences) if sequences else []):
            results[i] = math.exp(max(log_probs))
            if keys is not None:
                self.cache[keys[i]] = results[i]
        if isinstance(self.cache, RewardCache):
            self.cache.flush()
        return results

    def score_choices(
        self, queries: Sequence[str], passages: Sequence, choices: Sequence[Sequence[str]], gold: Sequence[int]
    ) -> list[float]:
        """Closed-set tasks: 1.0 where the gold choice is more probable than every other choice, else 0.0."""
        rewards = []
        for q, p, options, g in zip(queries, passages, choices, gold):
            probs = self.score([q] * len(options), [p] * len(options), [[o] for o in options])
            rewards.append(float(all(probs[g] > s for j, s in enumerate(probs) if j != g)))
        return rewards

    # ------------------------------------------------------------------ reward

    def label(self, query: str, score: float) -> float | None:
        """Threshold one score into a reward: 1.0, 0.0, or None (ignored)."""
        if self.threshold == "calibrated":
            if self.calibration is None:
                raise ValueError(
                    "threshold='calibrated' needs a calibration: run reward.calibrate(...) or pass calibration=."
                )
            return self.calibration.label(query, score)
        return 1.0 if score >= self.threshold else 0.0

    def __call__(self, queries=None, passages=None, answers=None, choices=None, **kwargs) -> list[float | None]:
        """TRL-style reward function: keyword arguments only, one reward per (query, passage) pair.

        With `choices` (per pair, the candidate answers) and `answers` holding the gold choice index, the closed-set
        rule applies instead of thresholds.
        """
        if queries is None or passages is None or answers is None:
            raise ValueError("Call the reward with queries=, passages= and answers= keyword arguments.")
        if choices is not None:
            return self.score_choices(queries, passages, choices, answers)
        return [self.label(q, s) for q, s in zip(queries, self.score(queries, passages, answers))]

    @property
    def cache_hit_rate(self) -> float:
        """Share of scored pairs served from the cache so far."""
        return self.cache_hits / self.cache_lookups if self.cache_lookups else 0.0

    # ------------------------------------------------------------------ generation and calibration

    @torch.no_grad()
    def generate(
        self,
        queries: Sequence[str],
        passages: Sequence[Sequence],
        max_new_tokens: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Greedy generations, one per query, with its list of passages in context (batched, left-padded), of at most
        `max_new_tokens` tokens (default: the reader's)."""
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= max_new_tokens < self.max_length:
            raise ValueError(
                f"max_new_tokens must be at least 1 and below max_length ({self.max_length}), got {max_new_tokens}: "
                "lower max_new_tokens or raise max_length."
            )
        prompts = [self._prompt_ids(q, ps, self.max_length - max_new_tokens) for q, ps in zip(queries, passages)]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))

        def run(batch_size: int) -> list[str]:
            outputs: list[str] = [""] * len(prompts)
            for chunk in iter_batches(order, batch_size, show_progress_bar, "Generating"):
                width = max(len(prompts[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]) :] = 1
                generated = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                )
                for row, i in enumerate(chunk):
                    outputs[i] = self.tokenizer.decode(generated[row, width:], skip_special_tokens=True)
            return outputs

        return self._with_batch_size(run)

    def label_by_generation(
        self,
        queries: Sequence[str],
        answers: Sequence[Sequence[str]],
        candidate_passages: Sequence[Sequence[dict]],
        max_new_tokens: int | None = None,
    ) -> list[dict]:
        """The offline stage's records: generate greedily with each candidate passage, label by answer containment,
        and record the answer-probability score.

        Args:
            queries: Training questions.
            answers: Their gold aliases.
            candidate_passages: Per question, passages (dicts with an `id`) from the initial retriever.
            max_new_tokens: Generation length (default: the reader's `max_new_tokens`).

        Returns:
            One dict per (query, passage): `query`, `passage_id`, `score`, `label`, `generation`.
        """
        flat_q, flat_p, flat_a = [], [], []
        for q, a, ps in zip(queries, answers, candidate_passages):
            for p in ps:
                flat_q.append(q)
                flat_p.append(p)
                flat_a.append(a)
        if not flat_q:
            raise ValueError("Calibration needs at least one query with candidate passages.")
        generations = self.generate(flat_q, [[p] for p in flat_p], max_new_tokens=max_new_tokens)
        scores = self.score(flat_q, flat_p, flat_a)
        return [
            {
                "query": q,
                "passage_id": str(p.get("id", "")) if isinstance(p, dict) else "",
                "score": s,
                "label": int(has_answer(g, a)),
                "generation": g,
            }
            for q, p, a, g, s in zip(flat_q, flat_p, flat_a, generations, scores)
        ]

    def calibrate(
        self,
        queries: Sequence[str],
        answers: Sequence[Sequence[str]],
        candidate_passages: Sequence[Sequence[dict]],
        max_new_tokens: int | None = None,
        save_path: str | os.PathLike | None = None,
    ) -> Calibration:
        """Label candidates by generation ([`label_by_generation`]) and derive per-query thresholds. Sets
        `self.calibration` and returns it; `save_path` also writes the records there (JSON Lines)."""
        records = self.label_by_generation(queries, answers, candidate_passages, max_new_tokens)
        self.calibration = Calibration.from_records(records)
        if save_path is not None:
            self.calibration.save(save_path)
        return self.calibration
