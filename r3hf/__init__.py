"""r3hf: train retrievers for retrieval-augmented generation with reinforcement learning (R3)."""

from .configuration_sidr import SIDRConfig
from .convert_sidr import convert_sidr_checkpoint
from .data import load_qa_dataset, load_table
from .evaluation import (
    RAGEvaluator,
    compare_predictions,
    compare_predictions_across_seeds,
    paired_bootstrap,
    seeded_paired_bootstrap,
    select_fusion,
    select_fusion_by_reader,
)
from .index import BagOfTokensIndex, BM25Retriever, CSRIndex, SearchResults, SparseEmbeddingIndex, load_index
from .losses import rcl_loss
from .model_card import SIDRModelCardData
from .modeling_sidr import SIDRModel, SIDROutput
from .models import load_retriever, resolve_model_path
from .protocols import ReaderLike, RetrieverLike
from .r3_config import R3Config
from .r3_trainer import R3Trainer
from .retrieval import retrieve
from .rewards import AnswerProbabilityReward, Calibration, GenerationReward, Reader, RewardCache
from .version import __version__

__all__ = [
    "AnswerProbabilityReward",
    "BM25Retriever",
    "BagOfTokensIndex",
    "CSRIndex",
    "Calibration",
    "GenerationReward",
    "R3Config",
    "R3Trainer",
    "RAGEvaluator",
    "Reader",
    "ReaderLike",
    "RetrieverLike",
    "RewardCache",
    "SIDRConfig",
    "SIDRModel",
    "SIDRModelCardData",
    "SIDROutput",
    "SearchResults",
    "SparseEmbeddingIndex",
    "__version__",
    "compare_predictions",
    "compare_predictions_across_seeds",
    "convert_sidr_checkpoint",
    "load_index",
    "load_qa_dataset",
    "load_retriever",
    "load_table",
    "paired_bootstrap",
    "resolve_model_path",
    "rcl_loss",
    "retrieve",
    "seeded_paired_bootstrap",
    "select_fusion",
    "select_fusion_by_reader",
]
