"""The RAG environment's exact reward: does the reader's own greedy answer with this passage contain a gold answer.

`AnswerProbabilityReward` approximates that outcome with one teacher-forced pass and a threshold (the paper's proxy,
for readers whose generation is too slow to run on every retrieved passage). `GenerationReward` runs the generation
itself, with the match rule of RAG accuracy: the reward is what the evaluation measures, at the cost of one pass per
new token.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..evaluation import has_answer
from .answer_probability import AnswerProbabilityReward
from .score_store import reward_key


class GenerationReward(AnswerProbabilityReward):
    """Reward = 1.0 when the reader's greedy generation from (query, one passage) contains a gold answer, else 0.0.

    Built and used like [`AnswerProbabilityReward`] (same reader arguments, score store, calibration and closed-set
    rule), whose `score` it keeps for calibration records; only the open-QA reward differs. `threshold` is not used.
    Generations are cached by (LLM weights, prompt settings, generation length, query, passage, answers), so a pair
    that comes back at a later step is not generated again.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__name__ = "generation"

    def _generation_key(self, query: str, passage, answers: Sequence[str]) -> bytes:
        return reward_key("generation", self.max_new_tokens, self._cache_key(query, passage, answers).hex())

    def __call__(self, queries=None, passages=None, answers=None, choices=None, **kwargs) -> list[float | None]:
        """TRL-style reward function: keyword arguments only, one reward per (query, passage) pair.

        With `choices`, the closed-set rule of [`AnswerProbabilityReward`] applies."""
        if queries is None or passages is None or answers is None:
            raise ValueError("Call the reward with queries=, passages= and answers= keyword arguments.")
        if choices is not None:
            return self.score_choices(queries, passages, choices, answers)
        if not (len(queries) == len(passages) == len(answers)):
            raise ValueError(
                f"queries, passages and answers differ in length: {len(queries)}, {len(passages)}, {len(answers)}."
            )
        answers = [[a] if isinstance(a, str) else list(a) for a in answers]
        keys = (
            [self._generation_key(q, p, a) for q, p, a in zip(queries, passages, answers)]
            if self.cache is not None
            else None
        )

        def compute(todo: list[int]) -> list[float]:
            generations = self.reader.generate([queries[i] for i in todo], [[passages[i]] for i in todo])
            return [float(has_answer(g, answers[i])) for i, g in zip(todo, generations)]

        return self._cached(keys, len(queries), compute)
