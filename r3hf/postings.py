"""Compiled posting-list kernels for CPU search, used when `numba` is installed (`pip install r3hf[fast]`).

Scoring one query against a term-major shard reads each active term's posting list once and adds the term's weight
into the score of every passage on the list. NumPy and SciPy can only do this by first copying the lists into one
array (a CSC matrix of the query's columns); compiled, the scatter reads the lists in place, at about the speed of
reading them. Both paths add a passage's terms in ascending token order in float32, so they give identical scores.

Set `r3hf.postings.ENABLED = False` to use the SciPy path even when numba is installed (benchmarks compare both).
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
