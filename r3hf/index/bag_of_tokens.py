"""The fixed, non-parametric index T(D), built once from the tokenizer, on one or several processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import datasets
import numpy as np
from transformers.utils import logging

from ..utils import (
    encoder_passage_text,
    zeroed_token_ids,
)
from .corpus import as_corpus_dataset, iter_passage_batches
from .csr_index import CSRIndex
from .shard import IndexShard, _index_dtype
from .tokenization import _BagTokenizer

logger = logging.get_logger(__name__)


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

    def add(self, passages, batch_size: int = 2048, show_progress_bar: bool | None = None) -> list[int]:
        """Index more passages, as a new shard after the last row: a bag of tokens needs no corpus statistics, so
        nothing already indexed changes. A bm25s part, whose IDF covers the whole corpus, is dropped: rebuild it with
        [`~CSRIndex.add_bm25`]. Returns the new passages' rows.

        Args:
            passages: As the corpus of [`build`], with the same columns as this index's corpus.
            batch_size: Passages tokenized at a time.
            show_progress_bar: Show a progress bar (default: for more than 4 batches).
        """
        new = as_corpus_dataset(passages)
        if set(new.column_names) != set(self.corpus.column_names):
            raise ValueError(
                f"The new passages have columns {new.column_names}, the index's corpus {self.corpus.column_names}: "
                "give passages with the same fields."
            )
        start = len(self)
        new = new.select_columns(self.corpus.column_names).cast(self.corpus.features)
        shards = _build_bag_of_tokens_shards(
            new, self.tokenizer, self.max_length, batch_size, show_progress_bar, 1_000_000, start
        )
        self.shards.extend(shards)
        self.corpus = datasets.concatenate_datasets([self.corpus, new])
        self.deleted = np.concatenate([self.deleted, np.zeros(len(new), dtype=bool)])
        self._passages_changed()
        return list(range(start, len(self)))


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
