"""Compiled kernels for CPU search, used when `numba` is installed (`pip install r3hf[fast]`).

Scoring one query against a term-major shard reads each active term's posting list once and adds the term's weight
into the score of every passage on the list. NumPy and SciPy can only do this by first copying the lists into one
array (a CSC matrix of the query's columns); compiled, the scatter reads the lists in place, at about the speed of
reading them. The row-major kernel computes each passage's dot product with dense queries over its own tokens.

Every kernel, and each SciPy fallback, adds a passage's products in ascending token order, one float32 addition at a
time, without fused multiply-adds: the term-major and row-major layouts give bitwise identical scores on any CPU
(MKL's sparse products, which torch uses on CPU, sum in an order that depends on the CPU's instruction set).

Set `r3hf.index.postings.ENABLED = False` to use the SciPy path even when numba is installed (benchmarks compare both).
It also turns off bm25s's compiled CSC builder, which building a large bm25s part uses when numba is installed
(from `r3hf.index.bm25.COMPILED_CSC_FROM` passages on).
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

ENABLED = True


def available() -> bool:
    """Whether the compiled kernels are used: numba is installed and [`ENABLED`] is set."""
    return ENABLED and _numba_installed()


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


def _scatter(term_indptr, term_rows, terms, weights, scores):
    for j in range(terms.shape[0]):
        term, weight = terms[j], weights[j]
        for p in range(term_indptr[term], term_indptr[term + 1]):
            scores[term_rows[p]] += weight


def _scatter_weighted(term_indptr, term_rows, term_values, terms, weights, scores):
    for j in range(terms.shape[0]):
        term, weight = terms[j], weights[j]
        for p in range(term_indptr[term], term_indptr[term + 1]):
            scores[term_rows[p]] += np.float32(term_values[p]) * weight


def _scatter_half(term_indptr, term_rows, term_bits, half_to_float, terms, weights, scores):
    # numba has no float16: the values' bit patterns index a table of their exact float32 values
    for j in range(terms.shape[0]):
        term, weight = terms[j], weights[j]
        for p in range(term_indptr[term], term_indptr[term + 1]):
            scores[term_rows[p]] += half_to_float[term_bits[p]] * weight


def _row_scores(indptr, indices, values, queries_t, out):
    # out[r, i] = sum over row r's tokens, ascending, of value * queries_t[token, i]; an inactive token adds +0.0
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            value, token = np.float32(values[p]), indices[p]
            for i in range(queries_t.shape[1]):
                out[r, i] += value * queries_t[token, i]


def _row_scores_binary(indptr, indices, queries_t, out):
    for r in range(indptr.shape[0] - 1):
        for p in range(indptr[r], indptr[r + 1]):
            token = indices[p]
            for i in range(queries_t.shape[1]):
                out[r, i] += queries_t[token, i]


def _compile(function):
    import numba  # optional: imported on first use, so `import r3hf` does not pay for it

    try:  # compiled code cached on disk (next to this module, or in numba's user cache)
        return numba.njit(nogil=True, boundscheck=False, cache=True)(function)
    except RuntimeError:  # no writable cache location: compile once per process instead
        return numba.njit(nogil=True, boundscheck=False)(function)


@functools.cache
def _kernels():
    half_to_float = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
    return _compile(_scatter), _compile(_scatter_weighted), _compile(_scatter_half), half_to_float


@functools.cache
def _row_kernels():
    return _compile(_row_scores), _compile(_row_scores_binary)


def scatter_scores(
    term_indptr: np.ndarray,
    term_rows: np.ndarray,
    term_values: np.ndarray | None,
    terms: np.ndarray,
    weights: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Add `weights[j]` (times the posting's value, for a weighted index) to `scores[row]` for every posting `row`
    of term `terms[j]`, in the order of `terms`."""
    scatter, scatter_weighted, scatter_half, half_to_float = _kernels()
    if term_values is None:
        scatter(term_indptr, term_rows, terms, weights, scores)
    elif term_values.dtype == np.float16:
        scatter_half(term_indptr, term_rows, term_values.view(np.uint16), half_to_float, terms, weights, scores)
    else:
        scatter_weighted(term_indptr, term_rows, term_values, terms, weights, scores)


def row_scores(
    indptr: np.ndarray, indices: np.ndarray, values: np.ndarray | None, queries_t: np.ndarray, out: np.ndarray
) -> None:
    """Add into `out[r, i]` (float32 `[rows, n]`, zeros on entry) the dot product of CSR row `r` with dense float32
    query `queries_t[:, i]` (`[V, n]`), adding the row's products in ascending token order. `values`: the rows'
    weights (float16 ones are converted exactly to float32), or `None` for a binary index."""
    weighted, binary = _row_kernels()
    if values is None:
        binary(indptr, indices, queries_t, out)
    else:
        weighted(indptr, indices, values.astype(np.float32, copy=False), queries_t, out)


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
