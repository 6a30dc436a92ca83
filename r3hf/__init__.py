"""r3hf: train retrievers for retrieval-augmented generation with reinforcement learning (R3)."""

from .convert_sidr import convert_sidr_checkpoint
from .index import BagOfTokensIndex, SearchResults, SparseEmbeddingIndex
from .losses import rcl_loss
from .modeling_sidr import SIDRConfig, SIDRModel, SIDROutput, elu1p, topk_sparsify
from .r3_config import R3Config
from .r3_trainer import R3Trainer
from .rewards import AnswerProbabilityReward, Calibration

__version__ = "0.1.0.dev0"

__all__ = [
    "AnswerProbabilityReward",
    "BagOfTokensIndex",
    "Calibration",
    "R3Config",
    "R3Trainer",
    "SIDRConfig",
    "SIDRModel",
    "SIDROutput",
    "SearchResults",
    "SparseEmbeddingIndex",
    "convert_sidr_checkpoint",
    "elu1p",
    "rcl_loss",
    "topk_sparsify",
]
