"""The corpus beside an index: normalising what users pass, passage batches, and id lookups."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..utils import (
    iter_batches,
)


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


def iter_passage_batches(corpus: datasets.Dataset, batch_size: int, show_progress_bar: bool | None, desc: str):
    """Yield `{"title","text"}` passage dicts of a corpus in batches, with a progress bar for long corpora."""
    has_title = "title" in corpus.column_names
    for batch in iter_batches(corpus, batch_size, show_progress_bar, desc):
        titles = batch["title"] if has_title else [None] * len(batch["text"])
        yield [{"title": t, "text": x} for t, x in zip(titles, batch["text"])]


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
