"""The reward side of R3: the reader LLM, its prompts, the answer-probability reward, its calibration against real
generation, the exact generation reward, and the shared store of reward scores."""

from .answer_probability import AnswerProbabilityReward
from .calibration import Calibration, OfflinePools, calibrate_in_parts, label_by_generation
from .generation import GenerationReward
from .prompts import ARC_PROMPT, CHAT_PROMPT, CLOSED_SET_PROMPTS, OPENQA_PROMPT, PUBHEALTH_PROMPT, format_paragraphs
from .reader import Reader
from .score_store import RewardCache

__all__ = [
    "ARC_PROMPT",
    "CHAT_PROMPT",
    "CLOSED_SET_PROMPTS",
    "OPENQA_PROMPT",
    "PUBHEALTH_PROMPT",
    "AnswerProbabilityReward",
    "Calibration",
    "GenerationReward",
    "OfflinePools",
    "Reader",
    "RewardCache",
    "calibrate_in_parts",
    "format_paragraphs",
    "label_by_generation",
]
