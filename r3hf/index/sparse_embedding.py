"""The parametric index E(D): every passage embedded by a retriever, for full parametric search."""

from __future__ import annotations

import numpy as np

from .corpus import as_corpus_dataset, iter_passage_batches
from .csr_index import CSRIndex
from .shard import _index_dtype


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
            (np.asarray(indptr), np.concatenate(indices), np.concatenate(values)),
            model.config.vocab_size,
            corpus,
            model.tokenizer,
            model.config.passage_max_length,
            extra={"model_name_or_path": model.config.name_or_path, "max_active_dims": model.config.max_active_dims},
        )
