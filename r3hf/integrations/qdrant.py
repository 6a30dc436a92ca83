"""Serve a trained retriever from Qdrant: the same late-parametric search in-process (`QdrantClient(":memory:")` or
`QdrantClient(path=...)`, for tests and small corpora) and on a Qdrant server or cluster (`QdrantClient(url=...)`).

One collection holds, per passage (point id = corpus row, payload = its `id`, `title` and `text`), up to three named
sparse vectors:

- `bag`: T(d), the passage's bag of tokens (value 1.0 per token), always;
- `emb`: E(d), the retriever's passage embedding, when a model is exported with the index;
- `bm25`: the passage's BM25 term weights as the index's bm25s part computes them (IDF × saturated term frequency),
  when the index has that part, so that a query's dot product with it is bm25s's score.

`QdrantRetriever` then runs r3hf's pipelines: candidates from `bag` (E(q)·T(d)), `bm25` or both, re-ranked by
E(q)·E(d). With `emb` stored and no fusion, that is one Query API request (prefetches, then the main query on `emb`);
otherwise the candidates' E(d) come from `emb` or, without it, from the model over their payload text, and r3hf's own
fusion ranks them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from ..index import BagOfTokensIndex, SearchResults
from ..retrieval import check_first_stage, fuse, merge_candidates, top_k
from ..rewards.reader import weights_sha256
from ..utils import iter_batches, vocabulary_fingerprint

BAG, EMB, BM25 = "bag", "emb", "bm25"
METADATA_KEY = "r3hf"


def _qdrant_models():
    try:
        from qdrant_client import models
    except ImportError as error:
        raise ImportError(
            "Serving from Qdrant needs qdrant-client: pip install 'r3hf[qdrant]' (or pip install qdrant-client)."
        ) from error
    return models


def _sparse(indices: np.ndarray, values: np.ndarray):
    return _qdrant_models().SparseVector(indices=indices.astype(np.int64).tolist(), values=values.tolist())


def _embedding_vectors(embeds: torch.Tensor) -> list:
    """Qdrant sparse vectors of dense `[n, V]` rows: their non-zero dimensions, ascending."""
    out = []
    for row in embeds.float().cpu():
        (dims,) = row.nonzero(as_tuple=True)
        out.append(_sparse(dims.numpy(), row[dims].numpy()))
    return out


def _bm25_weights(index: BagOfTokensIndex):
    """The bm25s part's per-passage term weights, row-major (`scipy.sparse.csr_matrix`, passages × bm25s tokens)."""
    from scipy.sparse import csc_matrix

    scores = index.require_bm25().bm25.scores
    shape = (int(scores["num_docs"]), len(scores["indptr"]) - 1)
    return csc_matrix((scores["data"], scores["indices"], scores["indptr"]), shape=shape).tocsr()


def _provenance(index: BagOfTokensIndex, model) -> dict:
    """What a collection is built from: checked before anything is added to it."""
    return {
        "vocabulary_fingerprint": vocabulary_fingerprint(index.tokenizer),
        "max_length": index.max_length,
        "model": None if model is None else str(model.config.name_or_path),
        "model_fingerprint": None if model is None else weights_sha256(model),
        "bm25_fingerprint": None if index.bm25 is None else index.bm25.fingerprint,
        "bm25_settings": None if index.bm25 is None else index.bm25.settings,
    }


def _refuse(collection_name: str, what: str) -> None:
    raise ValueError(
        f"Qdrant collection {collection_name!r} was built for another {what}: export into a new collection name, or "
        f"delete this one first (client.delete_collection({collection_name!r})). Nothing was changed."
    )


def export_index(
    index: BagOfTokensIndex,
    client,
    collection_name: str,
    model=None,
    batch_size: int = 256,
    show_progress_bar: bool | None = None,
    **create_kwargs,
) -> dict[str, int]:
    """Export a bag-of-tokens index (and, with `model`, the retriever's passage embeddings) to a Qdrant collection.

    The collection is created when missing. Points are upserted by corpus row, so an export that was interrupted,
    run again, adds exactly the passages still missing, and one run on an index that has grown since adds its new
    passages and removes those it has deleted ([`~BagOfTokensIndex.add`], [`~CSRIndex.delete`]). A collection built from another tokenizer, model, bm25s part or corpus (a row whose passage id
    differs) is refused before anything is written.

    Args:
        index: A [`BagOfTokensIndex`]; its bm25s part, when it has one, becomes the `bm25` vector.
        client: A `qdrant_client.QdrantClient` (in-process or a server).
        collection_name: The collection to create or complete.
        model: A [`SIDRModel`] whose E(d) become the `emb` vector, so the re-rank runs inside Qdrant.
        batch_size: Passages uploaded at a time (the model embeds them 32 at a time).
        show_progress_bar: Show a progress bar (default: for more than 4 batches).
        **create_kwargs: Further `client.create_collection` arguments for a new collection, e.g. a cluster's
            `shard_number` and `replication_factor`.

    Returns:
        `{"passages": in the index (deleted ones aside), "added": uploaded by this call, "deleted": removed by it}`.
    """
    models = _qdrant_models()
    provenance = _provenance(index, model)
    vectors = [BAG] + ([EMB] if model is not None else []) + ([BM25] if index.bm25 is not None else [])
    if client.collection_exists(collection_name):
        stored = (client.get_collection(collection_name).config.metadata or {}).get(METADATA_KEY)
        if stored is None:
            _refuse(collection_name, "purpose (it was not made by r3hf's export_index)")
        for key, what in (
            ("vocabulary_fingerprint", "tokenizer"),
            ("max_length", "passage length"),
            ("model_fingerprint", "model (or none)"),
            ("bm25_fingerprint", "bm25s part (or none)"),
        ):
            if stored.get(key) != provenance[key]:
                _refuse(collection_name, what)
    else:
        sparse = {name: models.SparseVectorParams() for name in vectors}
        client.create_collection(
            collection_name,
            vectors_config={},
            sparse_vectors_config=sparse,
            metadata={METADATA_KEY: provenance},
            **create_kwargs,
        )
    # Which rows the collection holds already, checked against the index's passage ids before any write.
    missing, deleted = [], []
    passage_ids = index.corpus["id"] if "id" in index.corpus.column_names else None
    for rows in iter_batches(list(range(len(index))), 1024, False):
        held = {p.id: p.payload for p in client.retrieve(collection_name, ids=rows, with_payload=["id"])}
        for row in rows:
            if index.deleted[row]:
                deleted.extend([row] if row in held else [])
            elif row not in held:
                missing.append(row)
            elif passage_ids is not None and held[row].get("id") != passage_ids[row]:
                _refuse(collection_name, f"corpus (row {row} holds passage {held[row].get('id')!r})")
    if deleted:  # passages deleted from the index since an earlier export
        delete_passages(client, collection_name, deleted)
    indptr, indices = index.indptr, index.indices
    bm25 = _bm25_weights(index) if index.bm25 is not None else None
    for rows in iter_batches(missing, batch_size, show_progress_bar, f"Exporting to Qdrant {collection_name!r}"):
        passages = index.get_passages(rows)
        per_row = [
            {BAG: _sparse(indices[indptr[r] : indptr[r + 1]], np.ones(indptr[r + 1] - indptr[r]))} for r in rows
        ]
        if model is not None:
            embeds = model.encode_document(passages, show_progress_bar=False, convert_to_sparse_tensor=False)
            for vectors_of, vector in zip(per_row, _embedding_vectors(embeds)):
                vectors_of[EMB] = vector
        if bm25 is not None:
            for vectors_of, r in zip(per_row, rows):
                weights = bm25.getrow(r)
                vectors_of[BM25] = _sparse(weights.indices, weights.data.astype(np.float32))
        points = [
            models.PointStruct(id=r, vector=v, payload={k: p.get(k) for k in ("id", "title", "text")})
            for r, v, p in zip(rows, per_row, passages)
        ]
        client.upsert(collection_name, points=points)
    return {"passages": len(index) - int(index.deleted.sum()), "added": len(missing), "deleted": len(deleted)}


def connect(location: str, timeout: int = 10):
    """A `QdrantClient` for a server URL (`http://...`, checked reachable) or an in-process store in a local folder
    (`":memory:"` for one in memory).

    Raises:
        ConnectionError: naming the URL, when no Qdrant server answers there.
    """
    _qdrant_models()  # names the extra when qdrant-client is missing
    from qdrant_client import QdrantClient

    if not location.startswith(("http://", "https://")):
        return QdrantClient(location=location) if location == ":memory:" else QdrantClient(path=location)
    client = QdrantClient(url=location, timeout=timeout)
    try:
        client.get_collections()
    except Exception as error:  # the client raises several kinds for a refused, timed-out or non-Qdrant address
        raise ConnectionError(
            f"cannot reach Qdrant at {location} ({type(error).__name__}): is the server running?"
        ) from error
    return client


def delete_passages(client, collection_name: str, rows: Sequence[int]) -> None:
    """Remove passages (by corpus row) from a collection that [`export_index`] made."""
    models = _qdrant_models()
    client.delete(collection_name, points_selector=models.PointIdsList(points=[int(r) for r in rows]))


class QdrantRetriever:
    """Late-parametric search over a Qdrant collection made by [`export_index`], with r3hf's retriever interface:
    usable wherever r3hf takes a retriever ([`RAGEvaluator`], the CLI).

    Args:
        client: A `qdrant_client.QdrantClient`.
        collection_name: The collection.
        model: The retriever ([`SIDRModel`]) whose E(q) searches and, without a stored `emb`, whose E(d) re-ranks.
        first_stage: `"bag_of_tokens"` (E(q)·T(d)), `"bm25"` or `"hybrid"` (their union).
        rerank_top_m: Candidates per query from each first stage.
        fusion, fusion_weight: The final ranking, as in [`r3hf.retrieval.fuse`] (choose them on dev, as r3hf does).
        bm25: The index's bm25s part ([`BM25Retriever`]), whose tokenizer turns queries into `bm25` vectors; needed
            by the `"bm25"` and `"hybrid"` first stages.
        batch_size: Queries (and passages, when embedded here) encoded at a time.
    """

    def __init__(
        self,
        client,
        collection_name: str,
        model,
        first_stage: str = "bag_of_tokens",
        rerank_top_m: int = 100,
        fusion: str = "none",
        fusion_weight: float = 0.5,
        bm25=None,
        batch_size: int = 32,
    ) -> None:
        check_first_stage(first_stage, fusion, fusion_weight)
        if not client.collection_exists(collection_name):
            raise ValueError(f"No Qdrant collection {collection_name!r}: make it with export_index first.")
        info = client.get_collection(collection_name)
        self.stored = (info.config.metadata or {}).get(METADATA_KEY)
        self.vectors = set(info.config.params.sparse_vectors or {})
        if first_stage != "bag_of_tokens" and BM25 not in self.vectors:
            raise ValueError(
                f"first_stage={first_stage!r} needs the collection's 'bm25' vector, which {collection_name!r} lacks: "
                "export an index with a bm25s part (index.add_bm25()) or use first_stage='bag_of_tokens'."
            )
        if first_stage != "bag_of_tokens" and bm25 is None:
            raise ValueError(f"first_stage={first_stage!r} needs bm25= (the index's bm25s part) to tokenize queries.")
        if bm25 is not None and self.stored and self.stored.get("bm25_fingerprint") != bm25.fingerprint:
            # another corpus's bm25s vocabulary would turn queries into other token ids, silently
            raise ValueError(
                f"bm25= is the bm25s part of another corpus than Qdrant collection {collection_name!r}'s: pass the "
                "bm25s part of the index the collection was exported from."
            )
        if self.stored and self.stored.get("vocabulary_fingerprint") != vocabulary_fingerprint(model.tokenizer):
            raise ValueError(
                f"Qdrant collection {collection_name!r} was built with another tokenizer than the model's: use the "
                "model the collection was exported for, or export again."
            )
        self.client, self.collection_name, self.model, self.bm25 = client, collection_name, model, bm25
        self.first_stage, self.rerank_top_m, self.fusion, self.fusion_weight = (
            first_stage,
            rerank_top_m,
            fusion,
            fusion_weight,
        )
        self.batch_size = batch_size
        # The stored E(d) re-rank only when they are this model's: a model trained further re-embeds from the text.
        self.use_stored_embeddings = EMB in self.vectors and (self.stored or {}).get("model_fingerprint") == (
            weights_sha256(model)
        )

    def _bm25_queries(self, queries: list[str]) -> list:
        counts = [Counter(ids) for ids in self.bm25.query_token_ids(queries)]
        return [
            _sparse(np.array(sorted(c), dtype=np.int64), np.array([c[i] for i in sorted(c)], float)) for c in counts
        ]

    def _leg(self, query_vectors: list, using: str, limit: int) -> list[list]:
        models = _qdrant_models()
        requests = [models.QueryRequest(query=q, using=using, limit=limit) for q in query_vectors]
        return [r.points for r in self.client.query_batch_points(self.collection_name, requests=requests)]

    def _passage_embeddings(self, rows: list[int]) -> torch.Tensor:
        """Dense E(d) of rows: the stored `emb` vectors, or the model over the stored passage text."""
        with_vectors = [EMB] if self.use_stored_embeddings else False
        points = {p.id: p for p in self.client.retrieve(self.collection_name, ids=rows, with_vectors=with_vectors)}
        if self.use_stored_embeddings:
            out = torch.zeros(len(rows), self.model.config.vocab_size)
            for i, r in enumerate(rows):
                vector = points[r].vector[EMB]
                out[i, torch.tensor(vector.indices, dtype=torch.long)] = torch.tensor(vector.values)
            return out
        passages = [points[r].payload for r in rows]
        return self.model.encode_document(
            passages, batch_size=self.batch_size, show_progress_bar=False, convert_to_sparse_tensor=False
        ).cpu()

    def retrieve(self, queries: Sequence[str] | str, index=None, k: int = 10, **kwargs) -> SearchResults:
        """The top `k` corpus rows of each query, best first, as r3hf's own `retrieve` ranks them.

        Args:
            queries: Query strings.
            index: Ignored (the collection is the index); accepted for r3hf's retriever protocol.
            k: Passages per query.
            **kwargs: `rerank_top_m`, `first_stage`, `fusion` and `fusion_weight` override the retriever's own for
                this call (as [`RAGEvaluator`] passes them); other keywords are ignored.
        """
        first_stage = kwargs.get("first_stage", self.first_stage)
        fusion = kwargs.get("fusion", self.fusion)
        weight = kwargs.get("fusion_weight", self.fusion_weight)
        m = max(kwargs.get("rerank_top_m", self.rerank_top_m), k)
        check_first_stage(first_stage, fusion, weight)
        queries = [queries] if isinstance(queries, str) else list(queries)
        query_embeds = self.model.encode_query(queries, batch_size=self.batch_size, convert_to_sparse_tensor=False)
        query_embeds = query_embeds.float().cpu()
        dense_queries = _embedding_vectors(query_embeds)
        bm25_queries = self._bm25_queries(queries) if first_stage != "bag_of_tokens" else None
        if self.use_stored_embeddings and fusion == "none":
            return self._retrieve_in_one_request(dense_queries, bm25_queries, first_stage, m, k)
        lexical = (
            [[p.id for p in points] for points in self._leg(dense_queries, BAG, m)] if first_stage != "bm25" else None
        )
        if first_stage == "bag_of_tokens":
            width = max(map(len, lexical))
            rows = torch.tensor([row + [-1] * (width - len(row)) for row in lexical], dtype=torch.long)
            bm25_ranks, bm25_scores = torch.zeros_like(rows), torch.zeros(rows.shape)
        else:
            legs = self._leg(bm25_queries, BM25, m)
            width = max(1, max(map(len, legs)))
            bm25_rows = torch.tensor([[p.id for p in ps] + [-1] * (width - len(ps)) for ps in legs], dtype=torch.long)
            bm25_points = torch.tensor([[p.score for p in ps] + [0.0] * (width - len(ps)) for ps in legs])
            if first_stage == "bm25":
                rows, bm25_scores = bm25_rows, bm25_points
                bm25_ranks = torch.where(rows >= 0, torch.arange(1, width + 1).expand_as(rows), 0)
            else:
                rows, bm25_ranks, bm25_scores = merge_candidates(lexical, bm25_rows, bm25_points)
        unique, inverse = rows.clamp_min(0).unique(return_inverse=True)
        passage_embeds = self._passage_embeddings(unique.tolist())
        dense = (query_embeds @ passage_embeds.T).gather(1, inverse)
        dense = torch.where(rows >= 0, dense, -torch.inf)
        return top_k(fuse(dense, bm25_ranks, fusion, weight, bm25_scores), rows, k)

    def _retrieve_in_one_request(self, dense_queries, bm25_queries, first_stage: str, m: int, k: int):
        """Prefetch the first stage's candidates, then score them by E(q)·E(d) on `emb`: one request per query."""
        models = _qdrant_models()
        requests = []
        for i, query in enumerate(dense_queries):
            prefetch = []
            if first_stage != "bm25":
                prefetch.append(models.Prefetch(query=query, using=BAG, limit=m))
            if first_stage != "bag_of_tokens":
                prefetch.append(models.Prefetch(query=bm25_queries[i], using=BM25, limit=m))
            requests.append(models.QueryRequest(prefetch=prefetch, query=query, using=EMB, limit=k))
        answers = self.client.query_batch_points(self.collection_name, requests=requests)
        width = min(len(a.points) for a in answers)
        rows = torch.tensor([[p.id for p in a.points[:width]] for a in answers], dtype=torch.long)
        scores = torch.tensor([[p.score for p in a.points[:width]] for a in answers], dtype=torch.float32)
        return SearchResults(rows=rows, scores=scores)
