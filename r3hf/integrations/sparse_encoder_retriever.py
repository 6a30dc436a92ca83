"""Any sentence-transformers `SparseEncoder` (a SPLADE model, a SIDR folder loaded in sentence-transformers) as an r3hf
retriever, so that [`RAGEvaluator`] compares it with a [`SIDRModel`] on the same questions."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch

from ..index import CSRIndex, SearchResults
from ..retrieval import retrieve
from ..utils import Passage, check_texts


def is_sparse_encoder(model) -> bool:
    """Whether `model` looks like a sentence-transformers `SparseEncoder` (without importing the library)."""
    return not hasattr(model, "retrieve") and all(
        hasattr(model, name) for name in ("encode_query", "encode_document", "get_embedding_dimension")
    )


class SparseEncoderRetriever:
    """A `SparseEncoder` with r3hf's retriever interface: `retrieve` scores E(q)·E(d) exactly as for a [`SIDRModel`],
    over a first stage's candidates on a [`BagOfTokensIndex`] (built with the encoder's tokenizer) or over every
    passage of a [`SparseEmbeddingIndex`] built with this wrapper. Passages given as `{"title","text"}` dicts are
    joined as r3hf joins them (`"title [SEP] text"`).

    Args:
        model: A `sentence_transformers.SparseEncoder`.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.tokenizer = model.tokenizer
        # What r3hf reads of a retriever's config: its output dimension (measured: a SPLADE pooling module reports
        # none before its first call) and the passage length it truncates to.
        vocab_size = model.encode_query(["a"], show_progress_bar=False).shape[-1]
        self.config = SimpleNamespace(
            vocab_size=vocab_size,
            passage_max_length=model.max_seq_length,
            name_or_path=getattr(model.model_card_data, "base_model", None),
            max_active_dims=model.max_active_dims,
        )

    def encode_query(
        self,
        sentences: Sequence[str] | str,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_sparse_tensor: bool = True,
    ) -> torch.Tensor:
        """E(q): the encoder's `encode_query` of the queries, a `[n, V]` tensor."""
        return self.model.encode_query(
            check_texts(sentences),
            batch_size=batch_size,
            show_progress_bar=bool(show_progress_bar),
            convert_to_sparse_tensor=convert_to_sparse_tensor,
        )

    def encode_document(
        self,
        sentences: Sequence[Passage] | Passage,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_sparse_tensor: bool = True,
    ) -> torch.Tensor:
        """E(d): the encoder's `encode_document` of the passages (strings or `{"title","text"}` dicts)."""
        return self.model.encode_document(
            check_texts(sentences, allow_dicts=True),
            batch_size=batch_size,
            show_progress_bar=bool(show_progress_bar),
            convert_to_sparse_tensor=convert_to_sparse_tensor,
        )

    encode_passages = encode_document

    def retrieve(self, queries: Sequence[str] | str, index: CSRIndex, k: int = 10, **kwargs) -> SearchResults:
        """The top `k` passages of each query; keyword arguments as for [`r3hf.retrieval.retrieve`]."""
        return retrieve(self, queries, index, k=k, **kwargs)


def as_retriever(model):
    """`model` itself when it retrieves, a [`SparseEncoderRetriever`] around a `SparseEncoder`."""
    return SparseEncoderRetriever(model) if is_sparse_encoder(model) else model
