"""BM25 with bm25s over an index's corpus: the lexical baseline users try first, and the lexical first stage of
hybrid search ([`r3hf.retrieval.retrieve`] with `first_stage="bm25"` or `"hybrid"`).

A saved BM25 part is bm25s's own folder (`BM25.save`: NumPy arrays and JSON, no pickle), loaded memory-mapped with
`BM25.load(mmap=True)`, plus `r3hf_bm25.json`: the tokenizer settings, the passage count, a fingerprint of the corpus
it was built over, and every file's size and SHA-256, so that a part built over another corpus, with other
settings, or damaged on disk is refused with an error that names the file and the fix.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch

from ..file_cache import remember_checksum
from ..utils import atomic_write_text, iter_batches, plain_passage_text, sha256_file, staging_dir
from . import postings
from .search_results import SearchResults
from .serialization import verify_files

BM25_CONFIG = "r3hf_bm25.json"
BM25_FOLDER = "bm25"
# From this many passages on, the build uses bm25s's compiled counting-sort CSC builder when numba is installed: the
# same arrays, without the argsort's 8-byte-per-entry temporaries that set the build's peak memory at scale; below
# it, compiling (seconds) costs more than it saves.
COMPILED_CSC_FROM = 100_000


def corpus_fingerprint(corpus: datasets.Dataset, batch_size: int = 65_536) -> str:
    """SHA-256 over the `id`, `title` and `text` of every passage, in order: two corpora share it only when they
    hold the same passages in the same rows."""
    digest = hashlib.sha256()
    columns = [c for c in ("id", "title", "text") if c in corpus.column_names]
    digest.update(json.dumps([len(corpus), columns]).encode())
    table = corpus.select_columns(columns).with_format("arrow")
    for start in range(0, len(corpus), batch_size):
        batch = table[start : start + batch_size]
        for name in columns:
            values = ["\x00" if v is None else str(v) for v in batch[name].to_pylist()]
            digest.update("\x1f".join(values).encode("utf-8", "surrogatepass"))
            digest.update(b"\x1e")
    return digest.hexdigest()


class _TokenIdLists(Sequence):
    """Each passage's bm25s token ids, held as one flat `int32` array and offsets: a Python list of ints per
    passage costs ~10x the memory, more than the index itself at 5M passages. A passage's list is made when asked
    for, which is all `BM25.index` does with it."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[int]:
        i = range(len(self))[i]  # negative rows count from the end, and out-of-range ones raise IndexError
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    def __iter__(self):
        for start, end in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist()):
            yield self.flat[start:end].tolist()


def _tokenize_corpus(corpus: datasets.Dataset, stopwords: str | None, batch_size: int = 100_000):
    """The corpus tokenized as `bm25s.tokenize(texts, stopwords=stopwords)` would (the same ids and vocabulary), a
    batch of passages at a time, as a `bm25s.tokenization.Tokenized` for `BM25.index`."""
    from bm25s.tokenization import Tokenized, Tokenizer

    # allow_empty=False keeps bm25s.tokenize's ids: no "" token first, and an empty passage has no tokens.
    tokenizer = Tokenizer(lower=True, stopwords=stopwords, stemmer=None)
    texts = corpus.select_columns([c for c in ("title", "text") if c in corpus.column_names])
    chunks, lengths = [], []
    for batch in iter_batches(texts, batch_size, desc="Tokenizing passages for bm25s"):
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        ids = tokenizer.tokenize(
            [plain_passage_text(p) for p in rows],
            update_vocab=True,
            return_as="ids",
            allow_empty=False,
            show_progress=False,
        )
        lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        chunks.append(np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths[-1].sum())))
    offsets = np.zeros(len(corpus) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return Tokenized(ids=_TokenIdLists(np.concatenate(chunks), offsets), vocab=tokenizer.get_vocab_dict())


class BM25Retriever:
    """bm25s over an index's corpus (title + text, lower-cased, stopwords removed), with the same `retrieve` protocol
    as [`SIDRModel`]: results are row ids of the index's corpus.

    Args:
        index: The index whose corpus to search ([`BagOfTokensIndex`] or [`SparseEmbeddingIndex`]).
        stopwords: bm25s stopword list (`"en"`, or `None` for none).
        bm25: An already built `bm25s.BM25` over that corpus (used by [`~BM25Retriever.from_pretrained`]).
        settings, fingerprint: What `bm25` was built with, as saved in `r3hf_bm25.json`.
        source: The folder it was loaded from, named in error messages.
    """

    def __init__(
        self,
        index,
        stopwords: str | None = "en",
        bm25=None,
        settings: dict | None = None,
        fingerprint: str | None = None,
        source: str | os.PathLike | None = None,
    ):
        import bm25s

        self._bm25s = bm25s
        self.index = index
        self.source = str(source) if source is not None else None
        if bm25 is not None and settings is None:
            raise ValueError("A built bm25s index needs the settings it was built with: pass settings=.")
        if bm25 is None:
            settings = {"stopwords": stopwords, "lower": True, "stemmer": None, "fields": ["title", "text"]}
            bm25 = bm25s.BM25()
            if len(index.corpus) >= COMPILED_CSC_FROM and postings.available() and hasattr(bm25, "activate_numba_csc"):
                bm25.activate_numba_csc()
            bm25.index(_tokenize_corpus(index.corpus, stopwords), show_progress=False)
            fingerprint = None
        self.bm25 = bm25
        self.settings = dict(settings)
        self._fingerprint = fingerprint

    @property
    def stopwords(self) -> str | None:
        return self.settings["stopwords"]

    @property
    def fingerprint(self) -> str:
        """[`corpus_fingerprint`] of the corpus this BM25 was built over (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = self.index.corpus_fingerprint
        return self._fingerprint

    def __len__(self) -> int:
        return int(self.bm25.scores["num_docs"])

    def tokenize(self, queries: Sequence[str] | str):
        """Queries tokenized as the index was (bm25s's `Tokenized` ids and vocabulary), for `self.bm25.retrieve`."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        return self._bm25s.tokenize(queries, stopwords=self.stopwords, show_progress=False)

    def search(self, queries: Sequence[str] | str, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
        """`(rows, scores)`: `LongTensor[n, k]` corpus rows of the top-`k` passages of each query by BM25, best first,
        and their `FloatTensor[n, k]` BM25 scores."""
        tokens = self.tokenize(queries)
        ids, scores = self.bm25.retrieve(tokens, k=min(k, len(self)), show_progress=False, n_threads=1)
        return torch.from_numpy(np.asarray(ids, dtype=np.int64)), torch.from_numpy(np.asarray(scores)).float()

    def query_token_ids(self, queries: Sequence[str] | str) -> list[list[int]]:
        """Each query's tokens as this index's bm25s token ids, one per occurrence (bm25s adds a repeated token's
        weight once per occurrence); tokens the corpus lacks are left out."""
        queries = [queries] if isinstance(queries, str) else list(queries)
        words = self._bm25s.tokenize(queries, stopwords=self.stopwords, return_ids=False, show_progress=False)
        return [self.bm25.get_tokens_ids(tokens) for tokens in words]

    def score_rows(self, queries: Sequence[str] | str, rows: Sequence[int]) -> torch.Tensor:
        """`FloatTensor[n, len(rows)]`: the BM25 score of each query against each of the given corpus rows (0 where
        they share no term), from bm25s's own scoring, so a row in a query's top-k gets the score `search` gives it.
        Each query is scored over the whole corpus, as `search` scores it before selecting its top k.
        """
        token_ids = self.query_token_ids(queries)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and not (0 <= rows.min() and rows.max() < len(self)):
            raise IndexError(f"Rows must lie in [0, {len(self)}), the passages this BM25 was built over.")
        out = np.zeros((len(token_ids), rows.size), dtype=np.float32)
        for i, ids in enumerate(token_ids):
            if ids:  # a query with no indexed term scores 0 everywhere
                out[i] = self.bm25.get_scores_from_ids(ids)[rows]
        return torch.from_numpy(out)

    def retrieve(self, queries: Sequence[str] | str, index=None, k: int = 10, **kwargs):
        """The top-`k` passages of each query by BM25, best first, as [`SearchResults`].

        Args:
            queries: Query strings.
            index: The index the retriever was built on (accepted for the shared protocol; another one is refused).
            k: Passages per query.
            **kwargs: Arguments of other retrievers' `retrieve` (`rerank_top_m`, `first_stage`, ...), ignored.
        """
        if index is not None and index is not self.index:
            raise ValueError("This BM25Retriever was built on another index: build one with BM25Retriever(index).")
        ids, scores = self.search(queries, k)
        return SearchResults(rows=ids, scores=scores)

    def check_settings(self, settings: dict) -> None:
        """Refuse a BM25 built with tokenizer settings (`stopwords`, `lower`, `stemmer`, `fields`) other than the
        given ones."""
        for key, wanted in settings.items():
            if self.settings.get(key) != wanted:
                where = f"{Path(self.source) / BM25_CONFIG}" if self.source else "this BM25Retriever"
                raise ValueError(
                    f"The bm25s index in {where} was built with {key}={self.settings.get(key)!r}, not {wanted!r}: "
                    f"rebuild it with index.add_bm25({key}={wanted!r}) and save the index again, or ask for "
                    f"{key}={self.settings.get(key)!r}."
                )

    def save_pretrained(self, save_directory: str | os.PathLike) -> dict:
        """Write bm25s's arrays (`BM25.save`, no pickle) and `r3hf_bm25.json` to a folder, replacing what is there
        only once everything is written. Returns the saved configuration."""
        out = Path(save_directory)
        with staging_dir(out.parent) as tmp:
            folder = tmp / out.name
            self.bm25.save(str(folder), allow_pickle=False, show_progress=False)
            files = sorted(p.name for p in folder.iterdir())
            config = {
                "bm25s_version": getattr(self._bm25s, "__version__", None),
                "settings": self.settings,
                "num_passages": len(self),
                "corpus_fingerprint": self.fingerprint,
                "files": {
                    name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
                    for name in files
                },
            }
            atomic_write_text(folder / BM25_CONFIG, json.dumps(config, indent=2))
            if out.exists():
                os.replace(out, tmp / ".old")
            os.replace(folder, out)
        for name, meta in config["files"].items():
            remember_checksum(out / name, meta["sha256"])
        return config

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, index, mmap: bool = True, verify: bool = True
    ) -> BM25Retriever:
        """Load a BM25 part saved by [`~BM25Retriever.save_pretrained`] for `index`, memory-mapped by default.

        Raises:
            ValueError: when a file is missing or does not match its recorded size or checksum, or when the BM25
                was built over another corpus than the index's (each message names the file and the fix).
        """
        folder = Path(folder)
        config_path = folder / BM25_CONFIG
        if not config_path.exists():
            raise FileNotFoundError(
                f"{config_path} not found: {folder} is not a saved r3hf BM25 part; build one with "
                "index.add_bm25() and save the index."
            )
        config = json.loads(config_path.read_text())
        verify_files(
            folder,
            config["files"],
            BM25_CONFIG,
            "rebuild the BM25 part with index.add_bm25() and save the index again",
            verify,
        )
        if config["num_passages"] != len(index) or config["corpus_fingerprint"] != index.corpus_fingerprint:
            raise ValueError(
                f"The bm25s index in {folder} was built over another corpus ({config['num_passages']} passages) than "
                f"this index's ({len(index)} passages, or the same count with other passages): rebuild it with "
                "index.add_bm25() and save the index again."
            )
        import bm25s

        bm25 = bm25s.BM25.load(str(folder), mmap=mmap, allow_pickle=False, load_corpus=False, show_progress=False)
        return cls(
            index, bm25=bm25, settings=config["settings"], fingerprint=config["corpus_fingerprint"], source=folder
        )
