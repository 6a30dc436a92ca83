"""r3hf: train retrievers for retrieval-augmented generation with reinforcement learning (R3)."""

from .convert_sidr import convert_sidr_checkpoint
from .data import load_qa_dataset, load_retriever, load_table
from .evaluation import RAGEvaluator, compare_predictions, paired_bootstrap, select_fusion
from .index import BagOfTokensIndex, BM25Retriever, CSRIndex, SearchResults, SparseEmbeddingIndex, load_index
from .losses import rcl_loss
from .modeling_sidr import SIDRConfig, SIDRModel, SIDROutput
from .r3_config import R3Config
from .r3_trainer import R3Trainer
from .retrieval import retrieve
from .reward_cache import RewardCache
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
    "RewardCache",
    "SIDRConfig",
    "SIDRModel",
    "SIDROutput",
    "SearchResults",
    "SparseEmbeddingIndex",
    "__version__",
    "compare_predictions",
    "convert_sidr_checkpoint",
    "load_index",
    "load_qa_dataset",
    "load_retriever",
    "load_table",
    "paired_bootstrap",
    "rcl_loss",
    "retrieve",
    "select_fusion",
]
