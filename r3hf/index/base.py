"""Deprecated alias of [`r3hf.index.csr_index`] (renamed in 0.1 after the class it holds); removed in the next
release."""

import warnings

from .csr_index import CSRIndex

warnings.warn(
    "r3hf.index.base is now r3hf.index.csr_index: import CSRIndex from there (or from r3hf); the old module goes in the "
    "next release.",
    FutureWarning,
    stacklevel=2,
)

__all__ = ["CSRIndex"]
