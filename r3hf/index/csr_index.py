"""`CSRIndex`: the search, lookups, saving, loading and Hub code that both index types share."""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from huggingface_hub import snapshot_download
from safetensors.numpy import save_file
from transformers import AutoTokenizer
from transformers.utils import logging

from ..file_cache import remember_checksum
from ..hub import push_folder
from ..model_card import render_index_card
from ..utils import (
    parse_size,
    sha256_file,
    staging_dir,
    vocabulary_fingerprint,
)
from . import postings
from .bm25 import BM25_FOLDER, BM25Retriever, corpus_fingerprint
from .corpus import _as_id_array, _sorted_ids
from .search_results import SearchResults
from .selection import _top_k_lowest_columns, _top_k_lowest_ids
from .serialization import (
    _DATA_FILE,
    ARRAYS_FILE,
    CORPUS_FILE,
    DEFAULT_MAX_SHARD_SIZE,
    FORMAT_VERSION,
    INDEX_CONFIG,
    _load_shard,
    verify_files,
)
from .shard import IndexShard, row_positions

logger = logging.get_logger(__name__)


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
        # Rows deleted since the index was built or loaded: search skips them, save_pretrained leaves them out.
        self.deleted = np.zeros(len(self), dtype=bool)
        self._bm25_dropped = False

    @property
    def corpus_fingerprint(self) -> str:
        """[`r3hf.index.bm25.corpus_fingerprint`] of the corpus: recorded when the index was saved with a BM25 part, else
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
        if self.bm25 is None and self._bm25_dropped:
            raise ValueError(
                "Passages were added to or deleted from this index since its bm25s part was built, and BM25's IDF and "
                "average length cover the whole corpus: call index.add_bm25() to rebuild it for a 'bm25' or 'hybrid' "
                "first stage."
            )
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
        query_cut: int | None = None,
    ) -> SearchResults:
        """Exact top-k passages by inner product with the index rows, best first.

        Args:
            query_embeds: `[n, V]` query vectors (dense or sparse), on the device the search should run on.
            k: Passages per query; clamped to the corpus size.
            chunk_size: Passages scored at a time by the row-major layout; bounds memory at `n * chunk_size` scores.
            layout: `"term_major"` (posting lists, CPU only: cost follows each query's active dimensions; the
                compiled scatter of [`r3hf.index.postings`] when numba is installed, SciPy otherwise), `"row_major"` (CSR
                products in chunks, any device), or `"auto"`: term-major on CPU for indexes of at least 100,000
                passages, row-major otherwise (on small corpora one batched product is as fast). On CPU both
                layouts, with or without numba, add each passage's products in ascending token order in float32, so
                they give bitwise identical ids and scores on any CPU. On an accelerator the row-major layout uses
                torch's sparse CSR product, whose summation order is the device library's: its scores agree with the
                CPU's to float32 rounding (relative error below `6e-8` times the number of products summed), and ids
                may differ at near-ties.
            num_threads: CPU threads (default: `torch.get_num_threads()`): queries searched in parallel by the
                term-major layout, passages split across threads by the compiled row-major kernel.
            query_cut: Query pruning (CPU): gather candidates from the posting lists of each query's `query_cut`
                largest terms only, then score every candidate exactly with the whole query (the bitwise scores a
                full search gives them) and keep the top k. Passages that share none of those terms are missed, and a
                query with fewer than k candidates is padded with row `-1` (score `-inf`). `None` (default): the
                exact search over every passage.

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
        if query_cut is not None and (query_cut < 1 or not on_cpu):
            raise ValueError(f"query_cut must be a positive number of terms, on CPU queries; got {query_cut}.")
        if layout == "term_major" and not on_cpu:
            raise ValueError(
                "The term-major layout searches on CPU: move the queries to CPU or use layout='row_major'."
            )
        live = len(self) - int(self.deleted.sum())
        if live == 0:
            raise ValueError("Every passage of this index is deleted: add passages before searching it.")
        k = min(k, live)
        # The k best live rows are among the k + (deleted) best rows: search that deep, then drop the deleted ones.
        depth = min(len(self), k + (len(self) - live))
        num_threads = num_threads or torch.get_num_threads()
        if query_cut is not None:
            results = self._search_pruned(query_embeds.detach(), depth, query_cut, num_threads)
        elif layout == "row_major" or not on_cpu or (layout == "auto" and len(self) < 100_000):
            results = self._search_row_major(query_embeds, depth, chunk_size, num_threads)
        else:
            results = self._search_term_major(query_embeds.detach(), depth, num_threads)
        if depth == k:
            return results
        deleted = torch.from_numpy(self.deleted).to(results.rows.device)
        keep = (results.rows < 0) | ~deleted[results.rows.clamp_min(0)]  # -1: a pruned search's padding
        order = keep.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :k]
        return SearchResults(rows=results.rows.gather(1, order), scores=results.scores.gather(1, order))

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
            rows=torch.from_numpy(np.stack([r[0] for r in results])).long(),
            scores=torch.from_numpy(np.stack([r[1] for r in results])),
        )

    def _search_pruned(self, query_embeds: torch.Tensor, k: int, query_cut: int, num_threads: int) -> SearchResults:
        queries = (query_embeds.to_dense() if query_embeds.is_sparse else query_embeds).float().numpy()

        def search_one(i: int) -> tuple[np.ndarray, np.ndarray]:
            query = queries[i]
            active = np.flatnonzero(query)
            terms = np.sort(active[np.argsort(-query[active], kind="stable")[:query_cut]])
            ids, scores = [np.full(k, -1, dtype=np.int64)], [np.full(k, -np.inf, dtype=np.float32)]
            for shard in self.shards:
                rows = shard.candidates(terms)
                shard_scores = shard.rows_scores(rows, query)
                best = _top_k_lowest_ids(shard_scores, min(k, len(rows)))
                ids.append(rows[best] + shard.start)
                scores.append(shard_scores[best])
            ids, scores = np.concatenate(ids), np.concatenate(scores)
            order = np.lexsort((ids, -scores))[:k]  # the padding, at -inf, last
            return ids[order], scores[order]

        with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
            results = list(pool.map(search_one, range(len(queries))))
        return SearchResults(
            rows=torch.from_numpy(np.stack([r[0] for r in results])).long(),
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
                    scores = torch.from_numpy(shard.row_major_scores(start, stop, queries_t, num_threads)).t()
                else:
                    scores = self._device_scores(number, shard, start, stop, queries_t)  # [n, chunk]
                row_ids = torch.arange(shard.start + start, shard.start + stop, device=device).expand(len(scores), -1)
                if best_scores is not None:  # earlier rows first, so the columns stay in ascending row order
                    scores, row_ids = torch.cat([best_scores, scores], dim=1), torch.cat([best_ids, row_ids], dim=1)
                columns = _top_k_lowest_columns(scores, min(k, scores.shape[1]))
                best_scores, best_ids = scores.gather(1, columns), row_ids.gather(1, columns)
        # best_ids ascend within each row, so a stable sort puts the lower row id first among equal scores.
        order = best_scores.sort(dim=1, descending=True, stable=True).indices
        return SearchResults(rows=best_ids.gather(1, order), scores=best_scores.gather(1, order))

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

    def delete(self, rows: Sequence[int]) -> None:
        """Delete passages by row: search skips them from now on, and [`save_pretrained`] writes the index without
        them (renumbering the rows after them, as a fresh build on the remaining passages would). A bm25s part, whose
        statistics cover the whole corpus, is dropped: rebuild it with [`add_bm25`].

        Args:
            rows: Row numbers (use [`rows_of`] for passage ids).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and not (0 <= rows.min() and rows.max() < len(self)):
            raise IndexError(f"Rows must lie in [0, {len(self)}): use index.rows_of(ids) for passage ids.")
        self.deleted[rows] = True
        self._passages_changed()

    def _passages_changed(self) -> None:
        self._corpus_fingerprint, self._id_lookup = None, None
        if self.bm25 is not None:
            self.bm25, self._bm25_dropped = None, True

    def compacted(self) -> CSRIndex:
        """A copy of the index without its deleted rows (the same arrays when none is deleted)."""
        if not self.deleted.any():
            return self
        live = np.flatnonzero(~self.deleted)
        if not len(live):
            raise ValueError("Every passage of this index is deleted: there is nothing to save.")
        indptr, indices, values = self.indptr, self.indices, self.values
        new_indptr = np.zeros(len(live) + 1, dtype=np.int64)
        take = row_positions(indptr, live, new_indptr)
        arrays = (new_indptr, indices[take], None if values is None else values[take])
        out = type(self)(
            arrays, self.vocab_size, self.corpus.select(live), self.tokenizer, self.max_length, self.extra
        )
        out._bm25_dropped = self._bm25_dropped
        return out

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
        if self.deleted.any():
            return self.compacted().save_pretrained(save_directory, max_shard_size)
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
