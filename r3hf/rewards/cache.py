"""Deprecated alias of [`r3hf.rewards.score_store`] (renamed in 0.1: it holds the reward score store); removed in the
next release."""

import warnings

from .score_store import RewardCache, reward_key

warnings.warn(
    "r3hf.rewards.cache is now r3hf.rewards.score_store: import RewardCache from there (or from r3hf); the old module "
    "goes in the next release.",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["RewardCache", "reward_key"]
