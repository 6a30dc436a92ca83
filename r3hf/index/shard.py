"""One shard of an index: a consecutive passage range in the row-major and term-major layouts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csc_array, csr_array

from . import postings
from .postings import _ones


def _index_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


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

    def row_major_scores(self, start: int, stop: int, queries_t: np.ndarray, num_threads: int) -> np.ndarray:
        """`[stop - start, n]` float32 scores of a shard's rows `[start, stop)` against dense `[V, n]` float32 queries
        on CPU, each row's products added in ascending token order: the term-major layout's sums, bitwise, on any CPU.
        The compiled kernel splits the rows across `num_threads` threads; SciPy's product runs on one."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        indptr = self.indptr[start : stop + 1] - lo
        indices, values = self.indices[lo:hi], self.values[lo:hi] if self.values is not None else None
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
        matrix = csr_array(
            (data, indices.astype(index_dtype), indptr.astype(index_dtype)), (stop - start, len(queries_t))
        )
        # SciPy's CSR product adds each row's products in order, in float32: the same sums as the compiled kernel
        return matrix @ queries_t

    def candidates(self, terms: np.ndarray) -> np.ndarray:
        """The rows (local, ascending) whose posting lists hold any of `terms`."""
        lo, hi = self.term_indptr[terms], self.term_indptr[terms + 1]
        if not (hi - lo).any():
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([self.term_rows[a:b] for a, b in zip(lo.tolist(), hi.tolist())]))

    def rows_scores(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """float32 scores of some rows (local, ascending) against one dense float32 query `[V]`, each row's products
        added in ascending token order: bitwise the scores a full search gives those rows."""
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        take = row_positions(self.indptr, rows, indptr)
        indices, values = self.indices[take], self.values[take] if self.values is not None else None
        if postings.available():
            out = np.zeros((len(rows), 1), dtype=np.float32)
            postings.row_scores(indptr, indices, values, np.ascontiguousarray(query[:, None]), out)
            return out[:, 0]
        data = _ones(len(take)) if values is None else values.astype(np.float32, copy=False)
        return csr_array((data, indices.astype(np.int64), indptr), (len(rows), len(query))) @ query

    def term_major_scores(self, terms: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Scores of every row of the shard for one query given by its active `terms` (ascending) and their
        `weights`, touching only those terms' posting lists. Sums run over a row's tokens in ascending order, as in
        the CSR product, so both layouts give identical float32 scores.

        Args:
            terms: The query's active token ids, ascending.
            weights: Their float32 weights.
            out: A float32 array of at least `len(self)` scores to overwrite (saves an allocation per query when the
                compiled kernels of [`r3hf.index.postings`] are used); the returned scores may be a view of it.
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


def row_positions(indptr: np.ndarray, rows: np.ndarray, new_indptr: np.ndarray) -> np.ndarray:
    """The positions, in a CSR layout's non-zero arrays, of the non-zeros of `rows` (in their order); fills
    `new_indptr` (`[len(rows) + 1]`, zeros) with the offsets of those rows taken alone."""
    starts, lengths = indptr[rows], indptr[np.asarray(rows) + 1] - indptr[rows]
    np.cumsum(lengths, out=new_indptr[1:])
    # each kept non-zero's old position: its row's old start plus its offset in the row
    return np.repeat(starts - new_indptr[:-1], lengths) + np.arange(new_indptr[-1])
