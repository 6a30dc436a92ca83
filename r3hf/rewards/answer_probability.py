"""The RAG environment's reward: how likely a frozen LLM is to answer correctly with one retrieved passage in context.

`AnswerProbabilityReward` scores P(gold answer | prompt(query, passage)) with one teacher-forced forward pass of a
[`Reader`], and turns the score into a binary reward with a global threshold or with per-query thresholds calibrated
offline against real generation. It is a plain callable in the TRL reward-function style.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial

import torch
from transformers import PreTrainedModel

from .calibration import Calibration, label_by_generation
from .reader import Reader
from .score_store import RewardCache, reward_key


def _reader_attribute(name: str) -> property:
    """An attribute of the reward that is its reader's, read and written through."""
    return property(
        lambda self: getattr(self.reader, name),
        lambda self, value: setattr(self.reader, name, value),
        doc=f"The reader's `{name}` (see [`Reader`]).",
    )


class AnswerProbabilityReward:
    """Reward = does the LLM answer correctly with this passage, judged by P(gold answer | prompt) in one pass.

    Args:
        model: A [`Reader`], a causal LM, or the Hub id / local folder of one (a PEFT adapter folder works too); the
            reader arguments below build the [`Reader`] and are ignored when one is passed.
        tokenizer, prompt_template, use_chat_template, batch_size, generation_batch_size: The reader's (see
            [`Reader`]).
        max_length, max_new_tokens, device, dtype: The reader's too.
        threshold: A global probability threshold (reward 1 if the score reaches it), or `"calibrated"` for the
            per-query thresholds of `calibration` (see [`Calibration.label`]).
        length_normalize: Score with the geometric mean of the answer tokens' probabilities instead of their product.
        cache: Keep scores keyed by (LLM weights, prompt settings, query, passage, answers) so no pair is scored
            twice: `True` (default) in memory, a [`RewardCache`] to share them across processes and runs, or `False`.
            The weights count by their [`Reader.fingerprint`], not their path.
        calibration: A [`Calibration`] (or the path of one saved with `save`) for `threshold="calibrated"`.
    """

    model = _reader_attribute("model")
    tokenizer = _reader_attribute("tokenizer")
    device = _reader_attribute("device")
    prompt_template = _reader_attribute("prompt_template")
    use_chat_template = _reader_attribute("use_chat_template")
    batch_size = _reader_attribute("batch_size")
    generation_batch_size = _reader_attribute("generation_batch_size")
    max_length = _reader_attribute("max_length")
    max_new_tokens = _reader_attribute("max_new_tokens")

    def __init__(
        self,
        model: Reader | str | os.PathLike | PreTrainedModel,
        tokenizer=None,
        prompt_template: str | None = None,
        use_chat_template: bool | None = None,
        threshold: float | str = 0.65,
        length_normalize: bool = False,
        batch_size: int = 8,
        generation_batch_size: int | None = None,
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
        self.reader = (
            model
            if isinstance(model, Reader)
            else Reader(
                model,
                tokenizer=tokenizer,
                prompt_template=prompt_template,
                use_chat_template=use_chat_template,
                batch_size=batch_size,
                generation_batch_size=generation_batch_size,
                max_length=max_length,
                max_new_tokens=max_new_tokens,
                device=device,
                dtype=dtype,
            )
        )
        self.threshold = threshold
        self.length_normalize = length_normalize
        self.cache: dict[bytes, float] | RewardCache | None = (
            cache if isinstance(cache, RewardCache) else {} if cache else None
        )
        self.cache_hits = 0
        self.cache_lookups = 0
        if calibration is not None and not isinstance(calibration, Calibration):
            calibration = Calibration.load(calibration)
        self.calibration = calibration
        self.__name__ = "answer_probability"

    def build_prompt(self, query: str, passages: Sequence) -> str:
        """The reader's prompt for a query with its passages ([`Reader.build_prompt`])."""
        return self.reader.build_prompt(query, passages)

    def generate(self, queries: Sequence[str], passages: Sequence[Sequence], **kwargs) -> list[str]:
        """The reader's greedy generations ([`Reader.generate`])."""
        return self.reader.generate(queries, passages, **kwargs)

    # ------------------------------------------------------------------ scoring

    def _cache_key(self, query: str, passage, answers: Sequence[str]) -> bytes:
        return reward_key(
            self.reader.fingerprint,
            self.prompt_template,
            self.use_chat_template,
            self.max_length,
            self.length_normalize,
            query,
            passage,
            list(answers),
        )

    def score(
        self,
        queries: Sequence[str],
        passages: Sequence,
        answers: Sequence[Sequence[str] | str],
        show_progress_bar: bool | None = False,
    ) -> list[float]:
        """P(gold answer | prompt(query, passage)) for each (query, passage, answers) triple, best alias kept.

        Args:
            queries: Questions.
            passages: One passage per question (a string or a `{"title","text"}` dict).
            answers: Per question, its gold answer aliases (or one string).
            show_progress_bar: A progress bar over the reader's batches (`None`: when there are more than 4).

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
        keys = (
            [self._cache_key(q, p, a) for q, p, a in zip(queries, passages, answers)]
            if self.cache is not None
            else None
        )

        def compute(todo: list[int]) -> list[float]:
            sequences = []
            for i in todo:
                aliases = [self.tokenizer(a, add_special_tokens=False)["input_ids"] for a in dict.fromkeys(answers[i])]
                budget = self.max_length - max(map(len, aliases))
                sequences.append((self.reader.prompt_ids(queries[i], [passages[i]], budget), aliases))
            log_probs = self.reader.log_probs(sequences, self.length_normalize, show_progress_bar)
            return [math.exp(max(lp)) for lp in log_probs]

        return self._cached(keys, len(queries), compute)

    def _cached(self, keys: list[bytes] | None, n: int, compute: Callable[[list[int]], list[float]]) -> list[float]:
        """`n` values, those whose key is in the cache read from it, the rest computed by `compute(positions)` (in
        one call, so the reader batches them) and stored."""
        results: list[float | None] = [None] * n
        if keys is None:
            cached = {}
        elif isinstance(self.cache, RewardCache):
            cached = self.cache.get_many(keys)
        else:
            cached = {k: self.cache[k] for k in keys if k in self.cache}
        todo = []
        for i in range(n):
            if keys is not None and keys[i] in cached:
                results[i] = cached[keys[i]]
            else:
                todo.append(i)
        self.cache_hits += n - len(todo) if keys is not None else 0
        self.cache_lookups += n if keys is not None else 0
        for i, value in zip(todo, compute(todo) if todo else []):
            results[i] = value
            if keys is not None:
                self.cache[keys[i]] = value
        if isinstance(self.cache, RewardCache):
            self.cache.flush()
        return results

    def choice_margins(
        self, queries: Sequence[str], passages: Sequence, choices: Sequence[Sequence[str]], gold: Sequence[int]
    ) -> list[float]:
        """Closed-set tasks: log P(gold choice | prompt) − the largest log P(other choice | prompt), for each
        (query, passage, choices, gold index). Every choice of a pair is scored in the same forward pass (each
        attending to the prompt and to itself only), and margins are cached like scores.

        Returns:
            One margin per pair: above 0 when the gold choice is the most probable.
        """
        if not (len(queries) == len(passages) == len(choices) == len(gold)):
            raise ValueError(
                f"queries, passages, choices and gold differ in length: {len(queries)}, {len(passages)}, "
                f"{len(choices)}, {len(gold)}."
            )
        for i, (options, g) in enumerate(zip(choices, gold)):
            if (
                len(options) < 2
                or len(set(options)) != len(options)
                or not all(isinstance(o, str) and o for o in options)
            ):
                raise ValueError(f"Question {i} needs at least two distinct non-empty choices, got {list(options)!r}.")
            if not isinstance(g, int) or not 0 <= g < len(options):
                raise ValueError(f"Question {i}: the gold choice index {g!r} is not one of 0..{len(options) - 1}.")
        keys = (
            [
                self._cache_key(q, p, ["choices", *c, f"gold={g}"])
                for q, p, c, g in zip(queries, passages, choices, gold)
            ]
            if self.cache is not None
            else None
        )

        def compute(todo: list[int]) -> list[float]:
            sequences = []
            for i in todo:
                options = [self.tokenizer(o, add_special_tokens=False)["input_ids"] for o in choices[i]]
                budget = self.max_length - sum(map(len, options))
                sequences.append((self.reader.prompt_ids(queries[i], [passages[i]], budget), options))
            margins = []
            for i, lp in zip(todo, self.reader.log_probs(sequences, self.length_normalize)):
                g = gold[i]
                margins.append(lp[g] - max(v for j, v in enumerate(lp) if j != g))
            return margins

        return self._cached(keys, len(queries), compute)

    def score_choices(
        self, queries: Sequence[str], passages: Sequence, choices: Sequence[Sequence[str]], gold: Sequence[int]
    ) -> list[float]:
        """Closed-set tasks (OpenRAG's rule): 1.0 where the gold choice is more probable than every other choice,
        else 0.0 ([`choice_margins`] above 0). No calibration is needed."""
        return [1.0 if m > 0 else 0.0 for m in self.choice_margins(queries, passages, choices, gold)]

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

    # ------------------------------------------------------------------ calibration

    def label_by_generation(
        self,
        queries: Sequence[str],
        answers: Sequence[Sequence[str]],
        candidate_passages: Sequence[Sequence[dict]],
        max_new_tokens: int | None = None,
    ) -> list[dict]:
        """[`label_by_generation`] with this reward's reader and scores."""
        score = partial(self.score, show_progress_bar=None)  # as long as the generation, whose bar shows too
        return label_by_generation(self.reader, score, queries, answers, candidate_passages, max_new_tokens)

    def label_closed_set(
        self,
        queries: Sequence[str],
        choices: Sequence[Sequence[str]],
        gold: Sequence[int],
        candidate_passages: Sequence[Sequence[dict]],
    ) -> list[dict]:
        """The offline stage's records for a closed-set task, by the closed-set rule instead of generation: per
        (query, candidate passage), `score` is the [`choice_margins`] margin and `label` 1 when it is above 0."""
        flat = [(q, p, c, g) for q, c, g, ps in zip(queries, choices, gold, candidate_passages) for p in ps]
        if not flat:
            raise ValueError("Calibration needs at least one query with candidate passages.")
        margins = self.choice_margins(*(list(column) for column in zip(*flat)))
        return [
            {
                "query": q,
                "passage_id": str(p.get("id", "")) if isinstance(p, dict) else "",
                "score": m,
                "label": int(m > 0),
                "generation": "",
            }
            for (q, p, _, _), m in zip(flat, margins)
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
