"""Sparse indexes over a corpus: the fixed bag-of-tokens index T(D) and the parametric index E(D).

Both are stored as plain CSR arrays (one row per passage over the tokenizer's vocabulary) and searched exactly by
inner product, in bounded-memory chunks of passages, on the device of the query tensor.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from huggingface_hub import snapshot_download
from safetensors.numpy import load_file, save_file
from transformers import AutoTokenizer

from .hub import push_folder, render_index_card
from .utils import (
    encoder_passage_text,
    iter_batches,
    sha256_file,
    staging_dir,
    vocabulary_fingerprint,
    zeroed_token_ids,
)

INDEX_CONFIG = "index_config.json"
ARRAYS_FILE = "index.safetensors"
CORPUS_FILE = "corpus.parquet"
FORMAT_VERSION = 1


@dataclass
class SearchResults:
    """Top-k results of a batch of queries, best first.

    Attributes:
        ids: `LongTensor[n_queries, k]`, row numbers of the passages in the index's corpus (`index.corpus[i]`).
        scores: `FloatTensor[n_queries, k]`, their inner-product scores.
    """

    ids: torch.Tensor
    scores: torch.Tensor


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


class CSRIndex:
    """Shared search, persistence and Hub code of [`BagOfTokensIndex`] and [`SparseEmbeddingIndex`]: one CSR row per
    passage over the tokenizer's vocabulary.

    Args:
        indptr: `[n_passages + 1]` row offsets.
        indices: Token ids of the non-zeros, row by row (`uint16` for vocabularies up to 65,536 tokens).
        values: Their weights, or `None` for a binary index.
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
        indptr: np.ndarray,
        indices: np.ndarray,
        values: np.ndarray | None,
        vocab_size: int,
        corpus: datasets.Dataset,
        tokenizer,
        max_length: int,
        extra: dict | None = None,
    ):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices)
        self.values = values
        self.vocab_size = int(vocab_size)
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.extra = dict(extra or {})
        self._device_csr: dict[str, tuple] = {}

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays (the corpus text not included)."""
        return self.indptr.nbytes + self.indices.nbytes + (self.values.nbytes if self.values is not None else 0)

    # ------------------------------------------------------------------ search

    def _csr_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_csr:
            crow = torch.from_numpy(self.indptr).to(device)
            col = torch.from_numpy(self.indices.astype(np.int32, copy=False)).to(device)
            if self.values is None:
                val = torch.ones(len(self.indices), dtype=torch.float32, device=device)
            else:
                val = torch.from_numpy(self.values).to(device=device, dtype=torch.float32)
            self._device_csr[key] = (crow, col, val)
        return self._device_csr[key]

    def search(self, query_embeds: torch.Tensor, k: int = 100, chunk_size: int = 200_000) -> SearchResults:
        """Exact top-k passages by inner product with the index rows, best first.

        Args:
            query_embeds: `[n, V]` query vectors (dense or sparse), on the device the search should run on.
            k: Passages per query; clamped to the corpus size.
            chunk_size: Passages scored at a time; bounds memory at `n * chunk_size` scores.

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
        device = query_embeds.device
        queries_t = (query_embeds.to_dense() if query_embeds.is_sparse else query_embeds).float().t().contiguous()
        crow, col, val = self._csr_on(device)
        n_rows, k = len(self), min(k, len(self))
        best_scores = best_ids = None
        for start in range(0, n_rows, chunk_size):
            stop = min(start + chunk_size, n_rows)
            lo, hi = int(self.indptr[start]), int(self.indptr[stop])
            with warnings.catch_warnings():  # torch flags sparse CSR as beta on every construction
                warnings.simplefilter("ignore", UserWarning)
                block = torch.sparse_csr_tensor(
                    crow[start : stop + 1] - lo, col[lo:hi], val[lo:hi], size=(stop - start, self.vocab_size)
                )
            scores = (block @ queries_t).t()  # [n, chunk]
            row_ids = torch.arange(start, stop, device=device).expand(len(scores), -1)
            if best_scores is not None:  # earlier rows first, so the columns stay in ascending row order
                scores, row_ids = torch.cat([best_scores, scores], dim=1), torch.cat([best_ids, row_ids], dim=1)
            columns = _top_k_lowest_columns(scores, min(k, scores.shape[1]))
            best_scores, best_ids = scores.gather(1, columns), row_ids.gather(1, columns)
        # best_ids ascend within each row, so a stable sort puts the lower row id first among equal scores.
        order = best_scores.sort(dim=1, descending=True, stable=True).indices
        return SearchResults(ids=best_ids.gather(1, order), scores=best_scores.gather(1, order))

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
            "num_nonzeros": int(len(self.indices)),
            **self.extra,
        }

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the index to a folder: CSR arrays (safetensors), corpus (parquet), tokenizer, `index_config.json`
        with file sizes and SHA-256 checksums, and a dataset card. Files are written to a temporary folder first and
        moved into place, the config last, so an interrupted save never leaves a folder that loads wrongly."""
        out = Path(save_directory)
        with staging_dir(out) as tmp:
            arrays = {"indptr": self.indptr, "indices": self.indices}
            if self.values is not None:
                arrays["values"] = self.values
            save_file(arrays, tmp / ARRAYS_FILE)
            self.corpus.to_parquet(tmp / CORPUS_FILE)
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            config = self._config()
            config["files"] = {
                name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                for name in (ARRAYS_FILE, CORPUS_FILE)
            }
            (tmp / INDEX_CONFIG).write_text(json.dumps(config, indent=2))
            render_index_card(config).save(tmp / "README.md")
            if (out / "tokenizer").exists():
                shutil.rmtree(out / "tokenizer")
            for name in (ARRAYS_FILE, CORPUS_FILE, "tokenizer", "README.md", INDEX_CONFIG):
                os.replace(tmp / name, out / name)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        tokenizer=None,
        revision: str | None = None,
        token: str | None = None,
        verify: bool = True,
    ):
        """Load an index from a folder or a Hub dataset repo.

        Args:
            path_or_repo_id: Local folder, or the id of a dataset repo written by `push_to_hub`.
            tokenizer: The tokenizer queries will be encoded with. Refused (`ValueError`) when its vocabulary differs
                from the one the index was built with. Defaults to the tokenizer saved with the index.
            revision, token: Hub revision and token.
            verify: Check file sizes and SHA-256 checksums against `index_config.json`.
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
        for name, meta in config["files"].items():
            file = path / name
            if not file.exists() or file.stat().st_size != meta["size"]:
                raise ValueError(
                    f"{file} is missing or truncated (expected {meta['size']} bytes): re-download or rebuild."
                )
            if verify and sha256_file(file) != meta["sha256"]:
                raise ValueError(f"{file} does not match its checksum in {INDEX_CONFIG}: the file is corrupted.")
        saved_tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        if tokenizer is None:
            tokenizer = saved_tokenizer
        elif vocabulary_fingerprint(tokenizer) != config["vocabulary_fingerprint"]:
            raise ValueError(
                f"The tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} has a different vocabulary from the one this "
                f"index was built with ({config['tokenizer_name_or_path']!r}): use that tokenizer or rebuild the index."
            )
        arrays = load_file(path / ARRAYS_FILE)
        corpus = datasets.Dataset.from_parquet(str(path / CORPUS_FILE))
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
        }
        return cls(
            arrays["indptr"],
            arrays["indices"],
            arrays.get("values"),
            config["vocab_size"],
            corpus,
            tokenizer,
            config["max_length"],
            extra={k: v for k, v in config.items() if k not in known},
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        revision: str | None = None,
    ) -> str:
        """Upload the index to a Hub dataset repo (created if needed); returns the commit URL."""
        return push_folder(
            lambda folder, _: self.save_pretrained(folder),
            repo_id,
            repo_type="dataset",
            private=private,
            token=token,
            revision=revision,
            commit_message=commit_message or f"Upload r3hf {self.kind} index",
        )


class BagOfTokensIndex(CSRIndex):
    """The fixed, non-parametric index T(D): which tokenizer tokens each passage contains.

    Built once by the tokenizer alone, so it never goes stale while the retriever trains. Searching it with
    parametric query embeddings gives E(q)·T(d), the first stage of late-parametric retrieval.
    """

    kind = "bag_of_tokens"

    @classmethod
    def build(
        cls, corpus, tokenizer, max_length: int = 256, batch_size: int = 2048, show_progress_bar: bool | None = None
    ) -> BagOfTokensIndex:
        """Tokenize a corpus into a binary CSR index.

        Args:
            corpus: `datasets.Dataset` (a `text` column, optionally `title` and `id`), list of strings, or list of
                `{"id","title","text"}` dicts. Titles are joined to the text as the passage encoder does.
            tokenizer: A (fast) tokenizer; the index keeps it to check compatibility later.
            max_length: Tokens per passage, as the passage encoder truncates (`SIDRConfig.passage_max_length`).
            batch_size: Passages tokenized at a time.
            show_progress_bar: Show a progress bar (default: for corpora of more than 4 batches).
        """
        corpus = as_corpus_dataset(corpus)
        zeroed = np.zeros(len(tokenizer), dtype=bool)
        zeroed[zeroed_token_ids(tokenizer)] = True
        dtype = _index_dtype(len(tokenizer))
        token_ids = _token_ids_fn(tokenizer, max_length)
        counts, chunks = [], []
        for passages in iter_passage_batches(corpus, batch_size, show_progress_bar, "Building bag-of-tokens index"):
            encoded = token_ids([encoder_passage_text(p) for p in passages])
            # One sort per batch: unique (passage, token) keys, row-major, so tokens come out sorted within rows.
            lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
            tokens = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
            keys = np.unique(np.repeat(np.arange(len(encoded)), lengths) * len(tokenizer) + tokens)
            keys = keys[~zeroed[keys % len(tokenizer)]]
            counts.append(np.bincount(keys // len(tokenizer), minlength=len(encoded)))
            chunks.append((keys % len(tokenizer)).astype(dtype))
        indptr = np.zeros(len(corpus) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(counts), out=indptr[1:])
        return cls(indptr, np.concatenate(chunks), None, len(tokenizer), corpus, tokenizer, max_length)


def _token_ids_fn(tokenizer, max_length: int):
    """A function from texts to their (truncated) token ids, exactly as `tokenizer(texts, truncation=True)` gives.

    For a fast tokenizer it calls a private copy of the Rust backend's `encode_batch_fast`, which skips the offsets
    and attention masks that the index does not need (about a third of the tokenization time).
    """
    if getattr(tokenizer, "is_fast", False):
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
        backend.enable_truncation(max_length)
        backend.no_padding()
        return lambda texts: [encoding.ids for encoding in backend.encode_batch_fast(texts)]
    return lambda texts: tokenizer(
        texts, truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=False
    )["input_ids"]


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
            np.asarray(indptr),
            np.concatenate(indices),
            np.concatenate(values),
            model.config.vocab_size,
            corpus,
            model.tokenizer,
            model.config.passage_max_length,
            extra={"model_name_or_path": model.config.name_or_path, "topk": model.config.topk},
        )
