"""r3hf: train retrievers for retrieval-augmented generation with reinforcement learning (R3)."""

from .bm25 import BM25Retriever
from .convert_sidr import convert_sidr_checkpoint
from .evaluation import RAGEvaluator, compare_predictions, paired_bootstrap
from .index import BagOfTokensIndex, CSRIndex, SearchResults, SparseEmbeddingIndex
from .losses import rcl_loss
from .modeling_sidr import SIDRConfig, SIDRModel, SIDROutput, elu1p, topk_sparsify
from .r3_config import R3Config
from .r3_trainer import R3Trainer
from .rewards import AnswerProbabilityReward, Calibration
from .version import __version__

__all__ = [
    "AnswerProbabilityReward",
    "BM25Retriever",
    "BagOfTokensIndex",
    "CSRIndex",
    "Calibration",
    "R3Config",
    "R3Trainer",
    "RAGEvaluator",
    "SIDRConfig",
    "SIDRModel",
    "SIDROutput",
    "SearchResults",
    "SparseEmbeddingIndex",
    "__version__",
    "compare_predictions",
    "convert_sidr_checkpoint",
    "elu1p",
    "paired_bootstrap",
    "rcl_loss",
    "topk_sparsify",
]
