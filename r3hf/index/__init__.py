"""Sparse indexes over a corpus: the fixed bag-of-tokens index T(D) and the parametric index E(D).

An index is a list of shards (consecutive passage ranges). Each shard holds its non-zeros twice: row-major CSR
(searched on CUDA in bounded-memory chunks) and term-major posting lists (searched on CPU, where a query pays only for
the posting lists of its active dimensions, scattered by the compiled kernel of `r3hf.index.postings` when numba is
installed). On CPU both layouts give bitwise identical ids and scores on any machine (each passage's products are
added in ascending token order, in float32, by r3hf's own kernels); on CUDA they agree to float32 rounding. Saved
shards are safetensors files (memory-mapped on load) next to parquet shards of the corpus.

One module per concept: `search_results`, `base` (search and lookups), `shard`, `selection` (top-k), `postings`
(the kernels), `tokenization` (the bag-of-tokens tokenizer), `bag_of_tokens`, `sparse_embedding`, `bm25` (the
lexical part), `serialization` (the saved format), `corpus`, and `loading` (`load_index`).
"""

from .bag_of_tokens import BagOfTokensIndex
from .bm25 import BM25Retriever
from .corpus import as_corpus_dataset
from .csr_index import CSRIndex
from .loading import load_index
from .search_results import SearchResults
from .serialization import INDEX_CONFIG
from .shard import IndexShard
from .sparse_embedding import SparseEmbeddingIndex

__all__ = [
    "INDEX_CONFIG",
    "BM25Retriever",
    "BagOfTokensIndex",
    "CSRIndex",
    "IndexShard",
    "SearchResults",
    "SparseEmbeddingIndex",
    "as_corpus_dataset",
    "load_index",
]
