"""r3hf: train retrievers for retrieval-augmented generation with reinforcement learning (R3)."""

from .convert_sidr import convert_sidr_checkpoint
from .index import BagOfTokensIndex, SearchResults, SparseEmbeddingIndex
from .modeling_sidr import SIDRConfig, SIDRModel, SIDROutput, elu1p, topk_sparsify

__version__ = "0.1.0.dev0"

__all__ = [
    "BagOfTokensIndex",
    "SearchResults",
    "SparseEmbeddingIndex",
    "convert_sidr_checkpoint",
    "SIDRConfig",
    "SIDRModel",
    "SIDROutput",
    "elu1p",
    "topk_sparsify",
]
