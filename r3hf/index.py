"""Sparse indexes over a corpus: the fixed bag-of-tokens index T(D) and the parametric index E(D).

An index is a list of shards (consecutive passage ranges). Each shard holds its non-zeros twice: row-major CSR
(searched on CUDA in bounded-memory chunks) and term-major posting lists (searched on CPU, where a query pays only for
the posting lists of its active dimensions, scattered by the compiled kernel of `r3hf.postings` when numba is
installed). On CPU both layouts give bitwise identical ids and scores on any machine (each passage's products are
added in ascending token order, in float32, by r3hf's own kernels); on CUDA they agree to float32 rounding. Saved
shards are
safetensors files (memory-mapped on load) next to parquet shards of the corpus.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from huggingface_hub import snapshot_download
from safetensors.numpy import load_file, save_file
from scipy.sparse import csc_array, csr_array
from transformers import AutoTokenizer

from . import postings
from .bm25 import BM25_FOLDER, BM25Retriever, corpus_fingerprint
from .checksums import remember_checksum, verify_files
from .hub import push_folder, render_index_card
from .search_results import SearchResults
from .utils import (
    encoder_passage_text,
    iter_batches,
    parse_size,
    sha256_file,
    staging_dir,
    vocabulary_fingerprint,
    zeroed_token_ids,
)

logger = logging.getLogger(__name__)

INDEX_CONFIG = "index_config.json"
ARRAYS_FILE = "index.safetensors"
CORPUS_FILE = "corpus.parquet"
FORMAT_VERSION = 2
DEFAULT_MAX_SHARD_SIZE = "500MB"
_SAFETENSORS_DTYPES = {
    "U8": np.uint8,
    "U16": np.uint16,
    "I32": np.int32,
    "I64": np.int64,
    "F16": np.float16,
    "F32": np.float32,
}
_DATA_FILE = re.compile(r"(index|corpus)(-\d{5}-of-\d{5})?\.(safetensors|parquet)")


def as_corpus_dataset(corpus) -> datasets.Dataset:
    """Normalise a corpus (`datasets.Dataset`, list of strings, or list of `{"id","title","text"}` dicts)."""
    if isinstance(corpus, datasets.Dataset):
        dataset = corpus
    elif isinstance(corpus, Sequence) and not isinstance(corpus, str):
        if len(corpus) and all(isinstance(x, str) for x in corpus):
            dataset = datasets.Dataset.from_dict({"text": list(corpus)})
        elif all(isinstance(x, dict) for x in corpus):
            dataset = datasets.Dataset.from_list(list(corpus)) if corpus else datasets.Dataset.from_dict({})
        else:
            raise TypeError("A corpus list must hold only strings or only {'id','title','text'} dicts.")
    else:
        raise TypeError(f"Unsupported corpus type {type(corpus).__name__}: pass a datasets.Dataset or a list.")
    if len(dataset) == 0:
        raise ValueError("The corpus is empty: an index needs at least one passage.")
    if "text" not in dataset.column_names:
        raise ValueError(f"The corpus needs a 'text' column; it has {dataset.column_names}.")
    return dataset


def _index_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def iter_passage_batches(corpus: datasets.Dataset, batch_size: int, show_progress_bar: bool | None, desc: str):
    """Yield `{"title","text"}` passage dicts of a corpus in batches, with a progress bar for long corpora."""
    has_title = "title" in corpus.column_names
    for batch in iter_batches(corpus, batch_size, show_progress_bar, desc):
        titles = batch["title"] if has_title else [None] * len(batch["text"])
        yield [{"title": t, "text": x} for t, x in zip(titles, batch["text"])]


def _top_k_lowest_columns(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Column indices (ascending) of the `k` largest scores of each row, ties at the `k`-th place going to the lowest
    columns (`torch.topk` keeps any of them)."""
    kth = scores.topk(k, dim=1).values[:, -1:]
    above, tied = scores > kth, scores == kth
    chosen = above | (tied & (tied.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
    return chosen.nonzero()[:, 1].view(len(scores), k)


def _top_k_lowest_ids(scores: np.ndarray, k: int, stride: int = 16) -> np.ndarray:
    """Positions of the `k` largest scores, best first, lower position first among equal scores.

    A threshold from every `stride`-th score narrows the candidates in one pass: the sample's `2k/stride + 8`-th
    largest, so that it leaves more than `k` candidates all but always (about `2k + 8 * stride` expected); the full
    top-k runs only when it leaves fewer.
    """
    if k >= len(scores):
        candidates = np.arange(len(scores))
    else:
        sample = scores[::stride]
        kth = _kth_largest(sample, min(len(sample), 2 * -(-k // stride) + 8))
        candidates = np.flatnonzero(scores >= kth)
        if len(candidates) < k:
            candidates = np.flatnonzero(scores >= _kth_largest(scores, k))
        elif len(candidates) > 4 * k:
            candidates = candidates[scores[candidates] >= _kth_largest(scores[candidates], k)]
    return candidates[np.lexsort((candidates, -scores[candidates]))[:k]]


def _kth_largest(values: np.ndarray, k: int) -> float:
    return torch.from_numpy(np.ascontiguousarray(values)).topk(k, sorted=False).values.min().item()


_ONES: dict[int, np.ndarray] = {}


def _ones(n: int) -> np.ndarray:
    """A read-only float32 array of `n` ones: a view of a shared buffer of the next power of two, so that it is more
    than half its buffer (a CSC array copies data that views less than half its base)."""
    size = 1 << max(n - 1, 0).bit_length()
    ones = _ONES.get(size)
    if ones is None:
        ones = np.ones(size, dtype=np.float32)
        ones.flags.writeable = False
        ones = _ONES.setdefault(size, ones)  # a concurrent thread may have added one: use a single buffer
    return ones[:n]


def _row_major_scores(shard: IndexShard, start: int, stop: int, queries_t: np.ndarray, num_threads: int) -> np.ndarray:
    """`[stop - start, n]` float32 scores of a shard's rows `[start, stop)` against dense `[V, n]` float32 queries
    on CPU, each row's products added in ascending token order: the term-major layout's sums, bitwise, on any CPU.
    The compiled kernel splits the rows across `num_threads` threads; SciPy's product runs on one."""
    lo, hi = int(shard.indptr[start]), int(shard.indptr[stop])
    indptr = shard.indptr[start : stop + 1] - lo
    indices, values = shard.indices[lo:hi], shard.values[lo:hi] if shard.values is not None else None
    if postings.available():
        out = np.zeros((stop - start, queries_t.shape[1]), dtype=np.float32)
        bounds = np.linspace(0, stop - start, max(1, num_threads) + 1).astype(np.int64)

        def score(part: int) -> None:
            a, b = bounds[part], bounds[part + 1]
            postings.row_scores(indptr[a : b + 1], indices, values, queries_t, out[a:b])

        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            list(pool.map(score, range(len(bounds) - 1)))
        return out
    data = _ones(hi - lo) if values is None else values.astype(np.float32, copy=False)
    index_dtype = np.int32 if hi - lo < np.iinfo(np.int32).max else np.int64
    matrix = csr_array((data, indices.astype(index_dtype), indptr.astype(index_dtype)), (stop - start, len(queries_t)))
    # SciPy's CSR product adds each row's products in order, in float32: the same sums as the compiled kernel
    return matrix @ queries_t


@dataclass
class IndexShard:
    """Passages `[start, start + len(shard))` of an index, their non-zeros stored in two layouts.

    Attributes:
        start: Row id of the shard's first passage in the whole index.
        indptr: `[n + 1]` row offsets of the row-major (CSR) layout.
        indices: Token ids of the non-zeros, row by row, ascending within a row (`uint16` for vocabularies up to
            65,536 tokens).
        values: Their weights, or `None` for a binary index.
        term_indptr: `[V + 1]` offsets of each token's posting list in the term-major layout.
        term_rows: Row ids (within the shard) of the postings, ascending within a list (`int32`).
        term_values: The postings' weights, or `None` for a binary index.
    """

    start: int
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray | None
    term_indptr: np.ndarray
    term_rows: np.ndarray
    term_values: np.ndarray | None

    @classmethod
    def from_csr(
        cls, indptr: np.ndarray, indices: np.ndarray, values: np.ndarray | None, vocab_size: int, start: int = 0
    ) -> IndexShard:
        """A shard from its row-major arrays; the term-major copy is derived (one stable sort of the token ids)."""
        indptr = np.asarray(indptr, dtype=np.int64)
        n_rows = len(indptr) - 1
        if n_rows >= np.iinfo(np.int32).max:
            raise ValueError(f"A shard holds at most {np.iinfo(np.int32).max - 1} passages; split the corpus.")
        order = np.argsort(indices, kind="stable")  # stable: rows stay ascending within each posting list
        rows = np.repeat(np.arange(n_rows, dtype=np.int32), np.diff(indptr))[order]
        term_indptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(np.bincount(indices, minlength=vocab_size), out=term_indptr[1:])
        term_values = values[order] if values is not None else None
        return cls(start, indptr, np.asarray(indices), values, term_indptr, rows, term_values)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("indptr", "indices", "values", "term_indptr", "term_rows", "term_values")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def rows(self, start: int, stop: int, vocab_size: int) -> IndexShard:
        """Rows `[start, stop)` of this shard (local numbers) as a new shard."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        values = self.values[lo:hi] if self.values is not None else None
        return IndexShard.from_csr(
            self.indptr[start : stop + 1] - lo, self.indices[lo:hi], values, vocab_size, self.start + start
        )

    def term_major_scores(self, terms: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Scores of every row of the shard for one query given by its active `terms` (ascending) and their
        `weights`, touching only those terms' posting lists. Sums run over a row's tokens in ascending order, as in
        the CSR product, so both layouts give identical float32 scores.

        Args:
            terms: The query's active token ids, ascending.
            weights: Their float32 weights.
            out: A float32 array of at least `len(self)` scores to overwrite (saves an allocation per query when the
                compiled kernels of [`r3hf.postings`] are used); the returned scores may be a view of it.
        """
        terms, weights = np.asarray(terms, dtype=np.int64), np.ascontiguousarray(weights, dtype=np.float32)
        # Checked for both paths: the compiled kernel does not check bounds, and NumPy would wrap negative ids.
        if len(terms) and (terms.min() < 0 or terms.max() >= len(self.term_indptr) - 1):
            raise ValueError(f"Term ids must lie in [0, {len(self.term_indptr) - 1}).")
        if out is not None and (out.dtype != np.float32 or out.ndim != 1 or len(out) < len(self)):
            raise ValueError(f"out must be a 1-D float32 array of at least {len(self)} scores.")
        if postings.available():
            scores = out[: len(self)] if out is not None else np.empty(len(self), dtype=np.float32)
            scores.fill(0)
            postings.scatter_scores(self.term_indptr, self.term_rows, self.term_values, terms, weights, scores)
            return scores
        lo, hi = self.term_indptr[terms], self.term_indptr[terms + 1]
        lengths = hi - lo
        ptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        if ptr[-1] == 0:
            return np.zeros(len(self), dtype=np.float32)
        # One copy of the lists (slices joined in C): cheaper than computing and gathering every posting's position.
        spans = list(zip(lo.tolist(), hi.tolist()))
        rows = np.concatenate([self.term_rows[a:b] for a, b in spans])
        if self.term_values is None:
            data = _ones(int(ptr[-1]))  # a shared read-only buffer: nothing written per query
        else:
            data = np.concatenate([self.term_values[a:b] for a, b in spans]).astype(np.float32)
        index_dtype = np.int32 if ptr[-1] < np.iinfo(np.int32).max else np.int64
        matrix = csc_array(
            (data, rows.astype(index_dtype, copy=False), ptr.astype(index_dtype)), (len(self), len(terms))
        )
        # value x weight, as the CSR product multiplies them: the same float32 products, summed in the same order
        return matrix @ weights


class CSRIndex:
    """Shared search, persistence and Hub code of [`BagOfTokensIndex`] and [`SparseEmbeddingIndex`]: one sparse row
    per passage over the tokenizer's vocabulary, stored in one or more [`IndexShard`]s.

    Args:
        shards: Consecutive passage ranges, in order (`shards[i].start` = passages before it), or a single
            `(indptr, indices, values)` triple of row-major arrays.
        vocab_size: Number of columns.
        corpus: The passages, row `i` of the index being row `i` of the corpus.
        tokenizer: The tokenizer the index was built with.
        max_length: Tokens per passage at build time.
        extra: Further entries of `index_config.json`.
    """

    kind: str
    card_template = "index_card.md"

    def __init__(
        self,
        shards: list[IndexShard] | tuple[np.ndarray, np.ndarray, np.ndarray | None],
        vocab_size: int,
        corpus: datasets.Dataset,
        tokenizer,
        max_length: int,
        extra: dict | None = None,
    ):
        self.vocab_size = int(vocab_size)
        if isinstance(shards, tuple):
            shards = [IndexShard.from_csr(*shards, self.vocab_size)]
        starts = np.cumsum([0] + [len(s) for s in shards[:-1]]).tolist()
        if [s.start for s in shards] != starts:
            raise ValueError(f"Shards must cover consecutive passages from 0: starts {[s.start for s in shards]}.")
        self.shards = list(shards)
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.extra = dict(extra or {})
        if len(corpus) != len(self):
            raise ValueError(f"The corpus has {len(corpus)} passages but the index has {len(self)} rows.")
        self._device_csr: dict[tuple[int, str], tuple] = {}
        self._id_lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._corpus_fingerprint: str | None = self.extra.pop("corpus_fingerprint", None)
        self.bm25: BM25Retriever | None = None
        self.source: str | None = None

    @property
    def corpus_fingerprint(self) -> str:
        """[`r3hf.bm25.corpus_fingerprint`] of the corpus: recorded when the index was saved with a BM25 part, else
        computed once."""
        if self._corpus_fingerprint is None:
            self._corpus_fingerprint = corpus_fingerprint(self.corpus)
        return self._corpus_fingerprint

    def add_bm25(self, stopwords: str | None = "en") -> BM25Retriever:
        """Build the BM25 part of the index (bm25s over the same corpus), used by `first_stage="bm25"` and
        `"hybrid"` searches and saved, loaded and pushed with the index. Returns it."""
        self.bm25 = BM25Retriever(self, stopwords=stopwords)
        return self.bm25

    def require_bm25(self, settings: dict | None = None) -> BM25Retriever:
        """The BM25 part, refused (with the fix) when the index has none, or when it was built with tokenizer
        `settings` (e.g. `{"stopwords": None}`) other than the ones given."""
        if self.bm25 is None:
            where = f"The index saved in {self.source}" if self.source else "This index"
            raise ValueError(
                f"{where} has no bm25s part, which a 'bm25' or 'hybrid' first stage needs: call index.add_bm25() "
                "(and save the index again), or build it with `r3hf index build --bm25`."
            )
        if settings:
            self.bm25.check_settings(settings)
        return self.bm25

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    @property
    def indptr(self) -> np.ndarray:
        """Row offsets of the whole index (row-major); built from the shards when there are several."""
        if len(self.shards) == 1:
            return self.shards[0].indptr
        offsets = np.cumsum([0] + [int(s.indptr[-1]) for s in self.shards[:-1]])
        return np.concatenate([[0]] + [s.indptr[1:] + o for s, o in zip(self.shards, offsets)])

    @property
    def indices(self) -> np.ndarray:
        """Token ids of all non-zeros, row by row (a copy when there are several shards)."""
        return self.shards[0].indices if len(self.shards) == 1 else np.concatenate([s.indices for s in self.shards])

    @property
    def values(self) -> np.ndarray | None:
        """Weights of all non-zeros, or `None` for a binary index."""
        if self.shards[0].values is None:
            return None
        return self.shards[0].values if len(self.shards) == 1 else np.concatenate([s.values for s in self.shards])

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays, both layouts (the corpus text not included)."""
        return sum(s.nbytes for s in self.shards)

    # ------------------------------------------------------------------ search

    def search(
        self,
        query_embeds: torch.Tensor,
        k: int = 100,
        chunk_size: int = 200_000,
        layout: str = "auto",
        num_threads: int | None = None,
    ) -> SearchResults:
        """Exact top-k passages by inner product with the index rows, best first.

        Args:
            query_embeds: `[n, V]` query vectors (dense or sparse), on the device the search should run on.
            k: Passages per query; clamped to the corpus size.
            chunk_size: Passages scored at a time by the row-major layout; bounds memory at `n * chunk_size` scores.
            layout: `"term_major"` (posting lists, CPU only: cost follows each query's active dimensions; the
                compiled scatter of [`r3hf.postings`] when numba is installed, SciPy otherwise), `"row_major"` (CSR
                products in chunks, any device), or `"auto"`: term-major on CPU for indexes of at least 100,000
                passages, row-major otherwise (on small corpora one batched product is as fast). On CPU both
                layouts, with or without numba, add each passage's products in ascending token order in float32, so
                they give bitwise identical ids and scores on any CPU. On an accelerator the row-major layout uses
                torch's sparse CSR product, whose summation order is the device library's: its scores agree with the
                CPU's to float32 rounding (relative error below `6e-8` times the number of products summed), and ids
                may differ at near-ties.
            num_threads: CPU threads (default: `torch.get_num_threads()`): queries searched in parallel by the
                term-major layout, passages split across threads by the compiled row-major kernel.

        Returns:
            [`SearchResults`] with `ids` and `scores` of shape `[n, min(k, len(index))]`, on the query's device.
            Among equal scores the lower row id comes first, at every `k`: `search(q, k)` is a prefix of
            `search(q, k2)` for `k < k2`.
        """
        if query_embeds.dim() != 2 or query_embeds.shape[0] == 0:
            raise ValueError(f"query_embeds must be a non-empty [n, V] tensor, got shape {tuple(query_embeds.shape)}.")
        if query_embeds.shape[1] != self.vocab_size:
            raise ValueError(
                f"query_embeds have {query_embeds.shape[1]} dimensions; this index has {self.vocab_size}."
            )
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
        if layout not in ("auto", "term_major", "row_major"):
            raise ValueError(f"layout must be 'auto', 'term_major' or 'row_major', got {layout!r}.")
        on_cpu = query_embeds.device.type == "cpu"
        if layout == "term_major" and not on_cpu:
            raise ValueError(
                "The term-major layout searches on CPU: move the queries to CPU or use layout='row_major'."
            )
        k = min(k, len(self))
        num_threads = num_threads or torch.get_num_threads()
        if layout == "row_major" or not on_cpu or (layout == "auto" and len(self) < 100_000):
            return self._search_row_major(query_embeds, k, chunk_size, num_threads)
        return self._search_term_major(query_embeds.detach(), k, num_threads)

    def _search_term_major(self, query_embeds: torch.Tensor, k: int, num_threads: int) -> SearchResults:
        with warnings.catch_warnings():  # torch flags sparse CSR as beta
            warnings.simplefilter("ignore", UserWarning)
            queries = (query_embeds.coalesce() if query_embeds.is_sparse else query_embeds).float().to_sparse_csr()
        crow, col, val = (t.numpy() for t in (queries.crow_indices(), queries.col_indices(), queries.values()))

        compiled = postings.available()
        buffers = threading.local()  # one score array per worker thread, reused across its queries

        def search_one(i: int) -> tuple[np.ndarray, np.ndarray]:
            span = slice(crow[i], crow[i + 1])
            terms, weights = col[span], val[span]
            if compiled and not hasattr(buffers, "scores"):
                buffers.scores = np.empty(max(len(s) for s in self.shards), dtype=np.float32)
            ids, scores = [], []
            for shard in self.shards:
                shard_scores = shard.term_major_scores(terms, weights, out=getattr(buffers, "scores", None))
                best = _top_k_lowest_ids(shard_scores, k)
                ids.append(best + shard.start)
                scores.append(shard_scores[best])
            ids, scores = np.concatenate(ids), np.concatenate(scores)
            order = np.lexsort((ids, -scores))[:k]
            return ids[order], scores[order]

        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            results = list(pool.map(search_one, range(len(crow) - 1)))
        return SearchResults(
            ids=torch.from_numpy(np.stack([r[0] for r in results])).long(),
            scores=torch.from_numpy(np.stack([r[1] for r in results])),
        )

    def _csr_on(self, shard_number: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (shard_number, str(device))
        if key not in self._device_csr:
            shard = self.shards[shard_number]
            with warnings.catch_warnings():  # memory-mapped arrays are read-only; torch only reads them here
                warnings.simplefilter("ignore", UserWarning)
                crow = torch.from_numpy(np.asarray(shard.indptr)).to(device)
                col = torch.from_numpy(shard.indices.astype(np.int32)).to(device)
                if shard.values is None:
                    val = torch.ones(len(shard.indices), dtype=torch.float32, device=device)
                else:
                    val = torch.from_numpy(shard.values.astype(np.float32)).to(device)
            self._device_csr[key] = (crow, col, val)
        return self._device_csr[key]

    def _search_row_major(
        self, query_embeds: torch.Tensor, k: int, chunk_size: int, num_threads: int
    ) -> SearchResults:
        device = query_embeds.device
        queries = (query_embeds.to_dense() if query_embeds.is_sparse else query_embeds).float().detach()
        on_cpu = device.type == "cpu"
        queries_t = queries.t().contiguous()
        if on_cpu:
            queries_t = queries_t.numpy()
        best_scores = best_ids = None
        for number, shard in enumerate(self.shards):
            for start in range(0, len(shard), chunk_size):
                stop = min(start + chunk_size, len(shard))
                if on_cpu:
                    scores = torch.from_numpy(_row_major_scores(shard, start, stop, queries_t, num_threads)).t()
                else:
                    scores = self._device_scores(number, shard, start, stop, queries_t)  # [n, chunk]
                row_ids = torch.arange(shard.start + start, shard.start + stop, device=device).expand(len(scores), -1)
                if best_scores is not None:  # earlier rows first, so the columns stay in ascending row order
                    scores, row_ids = torch.cat([best_scores, scores], dim=1), torch.cat([best_ids, row_ids], dim=1)
                columns = _top_k_lowest_columns(scores, min(k, scores.shape[1]))
                best_scores, best_ids = scores.gather(1, columns), row_ids.gather(1, columns)
        # best_ids ascend within each row, so a stable sort puts the lower row id first among equal scores.
        order = best_scores.sort(dim=1, descending=True, stable=True).indices
        return SearchResults(ids=best_ids.gather(1, order), scores=best_scores.gather(1, order))

    def _device_scores(
        self, number: int, shard: IndexShard, start: int, stop: int, queries_t: torch.Tensor
    ) -> torch.Tensor:
        """`[n, stop - start]` scores of a shard's rows on an accelerator, by torch's sparse CSR product (its
        summation order is the device library's: scores agree with the CPU layouts to float32 rounding)."""
        crow, col, val = self._csr_on(number, queries_t.device)
        lo, hi = int(shard.indptr[start]), int(shard.indptr[stop])
        with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
            warnings.simplefilter("ignore", UserWarning)
            block = torch.sparse_csr_tensor(
                crow[start : stop + 1] - lo, col[lo:hi], val[lo:hi], size=(stop - start, self.vocab_size)
            )
        return (block @ queries_t).t()

    def rows_of(self, passage_ids: Sequence) -> np.ndarray:
        """Row numbers of passages given by their `id` (the corpus's `id` column), `-1` for an unknown id.

        Looks ids up in a sorted copy of the id column (int64 when every id is an integer written canonically, as
        DPR's are, else fixed-width bytes), built on first use: no Python dict over the corpus.
        """
        if self._id_lookup is None:
            self._id_lookup = _sorted_ids(self.corpus)
        sorted_ids, order = self._id_lookup
        queries = _as_id_array([str(i) for i in passage_ids], integers=sorted_ids.dtype.kind == "i")
        if len(queries) == 0 or len(sorted_ids) == 0:
            return np.full(len(queries), -1, dtype=np.int64)
        if sorted_ids.dtype.kind == "S":
            fits = np.char.str_len(queries) <= sorted_ids.dtype.itemsize
            queries = np.where(fits, queries, b"").astype(sorted_ids.dtype)
        else:
            fits = queries >= 0
        position = np.minimum(np.searchsorted(sorted_ids, queries), len(sorted_ids) - 1)
        found = fits & (sorted_ids[position] == queries)
        return np.where(found, order[position], -1)

    def get_passages(self, ids: torch.Tensor | Sequence[int]) -> list:
        """The corpus rows for a `[n, k]` id tensor (a list of lists of dicts) or a flat list of ids."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        if ids and isinstance(ids[0], list):
            return [[self.corpus[i] for i in row] for row in ids]
        return [self.corpus[i] for i in ids]

    # ------------------------------------------------------------------ persistence

    def _config(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "index_type": self.kind,
            "tokenizer_name_or_path": getattr(self.tokenizer, "name_or_path", None),
            "vocabulary_fingerprint": vocabulary_fingerprint(self.tokenizer),
            "vocab_size": self.vocab_size,
            "max_length": self.max_length,
            "num_passages": len(self),
            "num_nonzeros": sum(int(s.indptr[-1]) for s in self.shards),
            **self.extra,
        }

    def _shards_of_size(self, max_bytes: int) -> list[IndexShard]:
        """The shards, those larger than `max_bytes` split into consecutive row ranges that fit."""
        out = []
        for shard in self.shards:
            if shard.nbytes <= max_bytes or len(shard) < 2:
                out.append(shard)
                continue
            per_nonzero = (shard.nbytes - shard.term_indptr.nbytes - shard.indptr.nbytes) / max(1, shard.indptr[-1])
            row_bytes = shard.indptr * per_nonzero + np.arange(len(shard) + 1) * 8  # cumulative bytes per row
            budget = max(max_bytes - shard.term_indptr.nbytes, 1)
            start = 0
            while start < len(shard):
                stop = int(np.searchsorted(row_bytes, row_bytes[start] + budget, side="right")) - 1
                stop = min(max(stop, start + 1), len(shard))
                out.append(shard.rows(start, stop, self.vocab_size))
                start = stop
        return out

    def save_pretrained(
        self, save_directory: str | os.PathLike, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
    ) -> None:
        """Write the index to a folder: the arrays of each shard (safetensors), the matching slice of the corpus
        (parquet), the tokenizer, `index_config.json` with every file's size and SHA-256 checksum, and a dataset card.

        Args:
            save_directory: The folder (created if needed). An index already there is replaced only once the new one
                is completely written, and its data files that the new one does not use are removed.
            max_shard_size: Largest array file (`"500MB"`, `"2GB"` or bytes). Larger shards are split by passages;
                one file pair (`index.safetensors`, `corpus.parquet`) when everything fits, else
                `index-00001-of-0000N.safetensors` with `corpus-00001-of-0000N.parquet`.
        """
        out = Path(save_directory)
        shards = self._shards_of_size(parse_size(max_shard_size))
        names = (
            [(ARRAYS_FILE, CORPUS_FILE)]
            if len(shards) == 1
            else [
                (f"index-{i:05d}-of-{len(shards):05d}.safetensors", f"corpus-{i:05d}-of-{len(shards):05d}.parquet")
                for i in range(1, len(shards) + 1)
            ]
        )
        with staging_dir(out) as tmp:
            config = self._config()
            config["shards"] = []
            for shard, (arrays_name, corpus_name) in zip(shards, names):
                save_file(
                    {name: np.ascontiguousarray(a) for name, a in shard.arrays().items()},
                    tmp / arrays_name,
                    metadata={"start": str(shard.start), "num_passages": str(len(shard))},
                )
                self.corpus.select(range(shard.start, shard.start + len(shard))).to_parquet(tmp / corpus_name)
                config["shards"].append(
                    {"arrays": arrays_name, "corpus": corpus_name, "start": shard.start, "num_passages": len(shard)}
                )
            config["files"] = {
                name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                for pair in names
                for name in pair
            }
            if self.bm25 is not None:
                bm25_config = self.bm25.save_pretrained(tmp / BM25_FOLDER)
                config["bm25"] = {"folder": BM25_FOLDER, **bm25_config["settings"]}
                config["corpus_fingerprint"] = self.corpus_fingerprint
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            render_index_card(config).save(tmp / "README.md")
            (tmp / INDEX_CONFIG).write_text(json.dumps(config, indent=2))
            for folder in ("tokenizer", BM25_FOLDER):  # a BM25 part of an earlier save goes with it
                if (out / folder).exists():
                    shutil.rmtree(out / folder)
                if (tmp / folder).exists():
                    os.replace(tmp / folder, out / folder)
            if self.bm25 is not None:  # known from writing them: the first load need not hash the BM25 part again
                for name, meta in bm25_config["files"].items():
                    remember_checksum(out / BM25_FOLDER / name, meta["sha256"])
            for name in [*config["files"], "README.md", INDEX_CONFIG]:
                os.replace(tmp / name, out / name)
                if name in config["files"]:
                    remember_checksum(out / name, config["files"][name]["sha256"])
        for stale in out.iterdir():
            if _DATA_FILE.fullmatch(stale.name) and stale.name not in config["files"]:
                stale.unlink()

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        tokenizer=None,
        revision: str | None = None,
        token: str | None = None,
        verify: bool = True,
        mmap: bool = True,
    ):
        """Load an index from a folder or a Hub dataset repo.

        Args:
            path_or_repo_id: Local folder, or the id of a dataset repo written by `push_to_hub`.
            tokenizer: The tokenizer queries will be encoded with. Refused (`ValueError`) when its vocabulary differs
                from the one the index was built with. Defaults to the tokenizer saved with the index.
            revision, token: Hub revision and token.
            verify: Check SHA-256 checksums against `index_config.json` (sizes are always checked). A file is hashed
                once per content: the result is remembered under `r3hf`'s cache folder, keyed by the file's real
                path, size and modification time.
            mmap: Map the arrays from their files instead of reading them into memory, so that processes loading the
                same folder share its pages. The corpus is memory-mapped Arrow either way (converted from parquet
                once, in the `datasets` cache).
        """
        path = Path(path_or_repo_id)
        if not path.is_dir():
            path = Path(snapshot_download(str(path_or_repo_id), repo_type="dataset", revision=revision, token=token))
        config_path = path / INDEX_CONFIG
        if not config_path.exists():
            raise FileNotFoundError(f"{config_path} not found: is {path_or_repo_id} an r3hf index?")
        config = json.loads(config_path.read_text())
        if config.get("index_type") != cls.kind:
            raise ValueError(f"{path_or_repo_id} holds a {config.get('index_type')!r} index, not {cls.kind!r}.")
        if config.get("format_version", 1) > FORMAT_VERSION:
            raise ValueError(
                f"{config_path} has format version {config['format_version']}; this r3hf reads up to "
                f"{FORMAT_VERSION}: upgrade r3hf."
            )
        verify_files(path, config["files"], INDEX_CONFIG, "re-download or rebuild the index", verify=verify)
        saved_tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        if tokenizer is None:
            tokenizer = saved_tokenizer
        elif vocabulary_fingerprint(tokenizer) != config["vocabulary_fingerprint"]:
            raise ValueError(
                f"The tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has a different vocabulary from the one this "
                f"index was built with ({config['tokenizer_name_or_path']!r}): use that tokenizer or rebuild the index."
            )
        entries = config.get("shards") or [
            {"arrays": ARRAYS_FILE, "corpus": CORPUS_FILE, "start": 0, "num_passages": config["num_passages"]}
        ]
        shards = [_load_shard(path / entry["arrays"], entry, config["vocab_size"], mmap) for entry in entries]
        for entry in entries:
            rows = pq.read_metadata(path / entry["corpus"]).num_rows
            if rows != entry["num_passages"]:
                raise ValueError(
                    f"{path / entry['corpus']} holds {rows} passages, {INDEX_CONFIG} says {entry['num_passages']}: "
                    "the shard comes from another build; re-download or rebuild the index."
                )
        corpus = datasets.Dataset.from_parquet(
            [str(path / entry["corpus"]) for entry in entries], keep_in_memory=not mmap
        )
        known = {
            "format_version",
            "index_type",
            "tokenizer_name_or_path",
            "vocabulary_fingerprint",
            "vocab_size",
            "max_length",
            "num_passages",
            "num_nonzeros",
            "files",
            "shards",
            "bm25",
        }
        index = cls(
            shards,
            config["vocab_size"],
            corpus,
            tokenizer,
            config["max_length"],
            extra={k: v for k, v in config.items() if k not in known},
        )
        index.source = str(path_or_repo_id)
        if "bm25" in config:
            index.bm25 = BM25Retriever.from_pretrained(
                path / config["bm25"]["folder"], index, mmap=mmap, verify=verify
            )
        return index

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    ) -> str:
        """Upload the index to a Hub dataset repo (created if needed) with `HfApi.upload_folder`, which sends large
        folders in several resumable commits; data files of an earlier upload that this one does not use are deleted.
        Returns the commit URL."""
        return push_folder(
            lambda folder, _: self.save_pretrained(folder, max_shard_size=max_shard_size),
            repo_id,
            repo_type="dataset",
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message or f"Upload r3hf {self.kind} index",
            delete_patterns=["index*.safetensors", "corpus*.parquet", f"{BM25_FOLDER}/*"],
        )


def _as_id_array(ids: list[str], integers: bool) -> np.ndarray:
    """Ids as int64 (`-1` for one that is not a canonical non-negative integer) or as fixed-width bytes."""
    if integers:
        return np.fromiter((int(i) if i.isdigit() and str(int(i)) == i else -1 for i in ids), np.int64, len(ids))
    return np.array([i.encode() for i in ids], dtype=bytes) if ids else np.array([], dtype="S1")


def _sorted_ids(corpus: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The corpus's ids sorted, with the row of each: `(sorted_ids, rows)`."""
    if "id" not in corpus.column_names:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    column = pc.cast(corpus.with_format("arrow")["id"], pa.string())
    if pc.all(pc.match_substring_regex(column, r"^(0|[1-9][0-9]{0,17})$")).as_py():
        values = pc.cast(column, pa.int64()).to_numpy()
    else:
        values = _as_id_array(column.to_pylist(), integers=False)
    order = np.argsort(values, kind="stable")
    return values[order], order


def _read_safetensors(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file, memory-mapped (read-only) from the file when `mmap`."""
    if not mmap:
        return load_file(path)
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
    arrays = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = np.dtype(_SAFETENSORS_DTYPES[meta["dtype"]])
        start, stop = meta["data_offsets"]
        count = (stop - start) // dtype.itemsize
        # A plain ndarray over the mapping: the np.memmap subclass makes every slice cost a Python-level hook,
        # which doubles the time to gather a query's posting lists.
        arrays[name] = (
            np.memmap(path, dtype=dtype, mode="r", offset=8 + header_size + start, shape=(count,)).view(np.ndarray)
            if count
            else np.zeros(0, dtype=dtype)
        )
    return arrays


def _load_shard(file: Path, entry: dict, vocab_size: int, mmap: bool) -> IndexShard:
    arrays = _read_safetensors(file, mmap)
    if "indptr" not in arrays or "indices" not in arrays:
        raise ValueError(f"{file} holds no index arrays: re-download or rebuild the index.")
    if len(arrays["indptr"]) - 1 != entry["num_passages"]:
        raise ValueError(
            f"{file} holds {len(arrays['indptr']) - 1} passages, {INDEX_CONFIG} says {entry['num_passages']}: the "
            "shard comes from another build; re-download or rebuild the index."
        )
    if "term_indptr" not in arrays:  # format 1: row-major only
        return IndexShard.from_csr(
            arrays["indptr"], arrays["indices"], arrays.get("values"), vocab_size, entry["start"]
        )
    return IndexShard(
        start=entry["start"],
        indptr=arrays["indptr"],
        indices=arrays["indices"],
        values=arrays.get("values"),
        term_indptr=arrays["term_indptr"],
        term_rows=arrays["term_rows"],
        term_values=arrays.get("term_values"),
    )


class BagOfTokensIndex(CSRIndex):
    """The fixed, non-parametric index T(D): which tokenizer tokens each passage contains.

    Built once by the tokenizer alone, so it never goes stale while the retriever trains. Searching it with
    parametric query embeddings gives E(q)·T(d), the first stage of late-parametric retrieval.
    """

    kind = "bag_of_tokens"

    @classmethod
    def build(
        cls,
        corpus,
        tokenizer,
        max_length: int = 256,
        batch_size: int = 2048,
        show_progress_bar: bool | None = None,
        num_proc: int | None = None,
        rows_per_shard: int = 1_000_000,
    ) -> BagOfTokensIndex:
        """Tokenize a corpus into a binary index.

        Args:
            corpus: `datasets.Dataset` (a `text` column, optionally `title` and `id`), list of strings, or list of
                `{"id","title","text"}` dicts. Titles are joined to the text as the passage encoder does.
            tokenizer: A (fast) tokenizer; the index keeps it to check compatibility later.
            max_length: Tokens per passage, as the passage encoder truncates (`SIDRConfig.passage_max_length`).
            batch_size: Passages tokenized at a time.
            show_progress_bar: Show a progress bar (default: for corpora of more than 4 batches).
            num_proc: Build in this many processes, each over a consecutive slice of the corpus that becomes its own
                shards of the index (nothing is merged, so nothing is held twice).
            rows_per_shard: Passages per shard (rounded up to whole batches). CPU search scores one shard at a time,
                so this bounds the score array a query scatters into (4 MB per million passages) and keeps it in
                cache.
        """
        corpus = as_corpus_dataset(corpus)
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}.")
        if num_proc is not None and num_proc < 1:
            raise ValueError(f"num_proc must be at least 1 (or None), got {num_proc}.")
        if num_proc is not None and num_proc > 1 and len(corpus) >= 2 * num_proc:
            pieces = [corpus.shard(num_proc, i, contiguous=True) for i in range(num_proc)]
            starts = np.cumsum([0] + [len(p) for p in pieces[:-1]]).tolist()
            # spawn, not fork: the parent may already run tokenizer and torch threads.
            with ProcessPoolExecutor(num_proc, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = [
                    pool.submit(
                        _build_bag_of_tokens_shards,
                        piece,
                        tokenizer,
                        max_length,
                        batch_size,
                        False,
                        rows_per_shard,
                        start,
                    )
                    for piece, start in zip(pieces, starts)
                ]
                shards = [shard for future in futures for shard in future.result()]
        else:
            shards = _build_bag_of_tokens_shards(
                corpus, tokenizer, max_length, batch_size, show_progress_bar, rows_per_shard
            )
        return cls(shards, len(tokenizer), corpus, tokenizer, max_length)


def _build_bag_of_tokens_shards(
    corpus: datasets.Dataset,
    tokenizer,
    max_length: int,
    batch_size: int,
    show_progress_bar: bool | None,
    rows_per_shard: int,
    start: int = 0,
) -> list[IndexShard]:
    vocab_size = len(tokenizer)
    zeroed = np.zeros(vocab_size, dtype=bool)
    zeroed[zeroed_token_ids(tokenizer)] = True
    tokenize = _BagTokenizer(tokenizer, max_length)
    shards, counts, chunks = [], [], []

    def close_shard() -> None:
        rows = np.concatenate(counts)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(rows, out=indptr[1:])
        shard_start = start + sum(len(s) for s in shards)
        shards.append(IndexShard.from_csr(indptr, np.concatenate(chunks), None, vocab_size, shard_start))
        counts.clear()
        chunks.clear()

    for passages in iter_passage_batches(corpus, batch_size, show_progress_bar, "Building bag-of-tokens index"):
        rows, tokens = tokenize([encoder_passage_text(p) for p in passages])
        # One sort per batch: unique (passage, token) keys, row-major, so tokens come out sorted within rows.
        keys = np.sort(rows * vocab_size + tokens)  # sort, then drop repeats: faster than np.unique's hashing
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
        keys = keys[~zeroed[keys % vocab_size]]
        counts.append(np.bincount(keys // vocab_size, minlength=len(passages)))
        chunks.append((keys % vocab_size).astype(_index_dtype(vocab_size)))
        if sum(len(c) for c in counts) >= rows_per_shard:
            close_shard()
    if counts:
        close_shard()
    return shards


class _Buffer:
    """A growable 1-D array (amortised appends)."""

    def __init__(self, dtype):
        self.data, self.size = np.empty(1024, dtype=dtype), 0

    def extend(self, values: np.ndarray) -> None:
        need = self.size + len(values)
        if need > len(self.data):
            grown = np.empty(max(need, 2 * len(self.data)), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : need] = values
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


_SPACE_SAFE_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip"}
_SPACE_SAFE_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}


def _component_types(spec: dict | None, members: str) -> set[str]:
    if spec is None:
        return set()
    if spec["type"] == "Sequence":
        return set().union(*(_component_types(s, members) for s in spec[members]))
    return {spec["type"]}


def _splits_at_spaces(tokenizer) -> bool:
    """Whether the tokenizer never lets a token span an ASCII space: then a text's tokens are the concatenation of
    its space-separated chunks' tokens, and each distinct chunk needs tokenizing only once."""
    if not getattr(tokenizer, "is_fast", False):
        return False
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre_tokenizers = _component_types(spec.get("pre_tokenizer"), "pretokenizers")
    added = tokenizer.added_tokens_decoder.values()
    return (
        _component_types(spec.get("normalizer"), "normalizers") <= _SPACE_SAFE_NORMALIZERS
        and bool(pre_tokenizers)
        and pre_tokenizers <= _SPACE_SAFE_PRE_TOKENIZERS
        and not any(" " in t.content or t.lstrip or t.rstrip or t.single_word for t in added)
    )


class _BagTokenizer:
    """(row, token id) pairs of a batch of texts, exactly the tokens of `tokenizer(texts, truncation=True,
    max_length=max_length)` without the special tokens added around them.

    When the tokenizer splits at spaces ([`_splits_at_spaces`]), each distinct space-separated chunk is tokenized
    once (joined with others into long texts, its tokens found back by their offsets) and texts are assembled from
    their chunks' tokens, truncated by cumulative counts; a corpus repeats most of its chunks, so this tokenizes a
    small fraction of the words. Other tokenizers tokenize every text.
    """

    max_cached_chunks = 2_000_000

    def __init__(self, tokenizer, max_length: int):
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer) if getattr(tokenizer, "is_fast", False) else None
        self.tokenizer, self.max_length = tokenizer, max_length
        self.by_chunks = _splits_at_spaces(tokenizer)
        if self.backend is not None:
            self.backend.no_padding()
            if self.by_chunks:  # chunks are tokenized whole; texts are truncated when assembled
                self.backend.no_truncation()
                self.limit = max(max_length - self.backend.num_special_tokens_to_add(False), 0)
                self._reset()
            else:
                self.backend.enable_truncation(max_length)

    def _reset(self) -> None:
        self.chunk_ids: dict[str, int] = {}
        self.lengths, self.starts, self.tokens = _Buffer(np.int64), _Buffer(np.int64), _Buffer(np.int32)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not self.by_chunks:
            return self._tokenize_whole(texts)
        if len(self.chunk_ids) > self.max_cached_chunks:
            self._reset()
        # Split and find the batch's distinct chunks in Arrow, then pass only those through the dict of all chunks.
        split = pc.split_pattern(pa.array(texts, type=pa.large_string()), " ")
        n_chunks = np.diff(split.offsets.to_numpy()).astype(np.int64)
        encoded = pc.dictionary_encode(split.flatten())
        ids, known = self.chunk_ids, len(self.chunk_ids)
        distinct = encoded.dictionary.to_pylist()
        chunk = np.fromiter((ids.setdefault(c, len(ids)) for c in distinct), dtype=np.int64, count=len(distinct))
        chunk = chunk[encoded.indices.to_numpy()]
        if len(ids) > known:
            self._tokenize_chunks(list(itertools.islice(reversed(ids), len(ids) - known))[::-1])
        lengths, starts = self.lengths.view[chunk], self.starts.view[chunk]
        before = np.cumsum(lengths) - lengths
        first = np.cumsum(n_chunks) - n_chunks
        before -= np.repeat(before[first], n_chunks)  # tokens before each chunk within its own text
        keep = np.clip(self.limit - before, 0, lengths)
        kept_before = np.cumsum(keep) - keep
        positions = np.repeat(starts - kept_before, keep) + np.arange(int(keep.sum()))
        rows = np.repeat(np.repeat(np.arange(len(texts)), n_chunks), keep)
        return rows, self.tokens.view[positions].astype(np.int64)

    def _tokenize_chunks(self, chunks: list[str], per_text: int = 2048) -> None:
        groups = [chunks[i : i + per_text] for i in range(0, len(chunks), per_text)]
        encodings = self.backend.encode_batch([" ".join(g) for g in groups], add_special_tokens=False)
        for group, encoding in zip(groups, encodings):
            chunk_starts = np.cumsum([0] + [len(c) + 1 for c in group[:-1]])
            token_starts = np.fromiter((o[0] for o in encoding.offsets), dtype=np.int64, count=len(encoding.ids))
            owner = np.searchsorted(chunk_starts, token_starts, side="right") - 1
            counts = np.bincount(owner, minlength=len(group))
            self.starts.extend(self.tokens.size + np.cumsum(counts) - counts)
            self.lengths.extend(counts)
            self.tokens.extend(np.asarray(encoding.ids, dtype=np.int32))

    def _tokenize_whole(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.backend is not None:
            encoded = [e.ids for e in self.backend.encode_batch_fast(texts)]
        else:
            encoded = self.tokenizer(
                texts,
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        tokens = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
        return np.repeat(np.arange(len(encoded)), lengths), tokens


class SparseEmbeddingIndex(CSRIndex):
    """The full parametric index E(D): each passage's top-k embedding, values stored in fp16.

    Exact, but goes stale as soon as the passage encoder changes: rebuild it after training (or use late-parametric
    retrieval over a [`BagOfTokensIndex`]).
    """

    kind = "sparse_embedding"

    @classmethod
    def build(cls, corpus, model, batch_size: int = 32, show_progress_bar: bool | None = None) -> SparseEmbeddingIndex:
        """Embed a corpus with `model.encode_document` in batches and store the non-zero values.

        Args:
            corpus: As for [`BagOfTokensIndex.build`].
            model: A [`SIDRModel`].
            batch_size: Passages embedded at a time.
            show_progress_bar: Show a progress bar (default: for more than 4 batches).
        """
        corpus = as_corpus_dataset(corpus)
        dtype = _index_dtype(model.config.vocab_size)
        indptr, indices, values = [0], [], []
        for passages in iter_passage_batches(corpus, batch_size, show_progress_bar, "Building sparse embedding index"):
            emb = model.encode_document(
                passages, batch_size=batch_size, show_progress_bar=False, convert_to_sparse_tensor=False
            ).cpu()
            sparse = emb.to_sparse_csr()
            indptr.extend((sparse.crow_indices()[1:] + indptr[-1]).tolist())
            indices.append(sparse.col_indices().numpy().astype(dtype))
            values.append(sparse.values().numpy().astype(np.float16))
        return cls(
            (np.asarray(indptr), np.concatenate(indices), np.concatenate(values)),
            model.config.vocab_size,
            corpus,
            model.tokenizer,
            model.config.passage_max_length,
            extra={"model_name_or_path": model.config.name_or_path, "topk": model.config.topk},
        )


def load_index(
    path_or_repo_id: str | os.PathLike, revision: str | None = None, token: str | None = None, **kwargs
) -> CSRIndex:
    """Load a saved index (a folder or a Hub dataset repo) as the class its `index_config.json` names:
    [`BagOfTokensIndex`] or [`SparseEmbeddingIndex`]. `kwargs` go to that class's `from_pretrained`."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        config_path = path / INDEX_CONFIG
    else:
        from huggingface_hub import hf_hub_download

        config_path = Path(
            hf_hub_download(str(path_or_repo_id), INDEX_CONFIG, repo_type="dataset", revision=revision, token=token)
        )
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found: is {path_or_repo_id} an r3hf index?")
    kind = json.loads(config_path.read_text()).get("index_type")
    classes = {cls.kind: cls for cls in (BagOfTokensIndex, SparseEmbeddingIndex)}
    if kind not in classes:
        raise ValueError(f"{config_path} names index_type {kind!r}; this r3hf reads {sorted(classes)}: upgrade r3hf.")
    return classes[kind].from_pretrained(path_or_repo_id, revision=revision, token=token, **kwargs)
