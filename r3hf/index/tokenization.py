"""The bag-of-tokens tokenizer of index builds: long corpora tokenized in chunks, with a cache of repeated words."""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class _Buffer:
    """A growable 1-D array (amortised appends)."""

    def __init__(self, dtype):
        self.data, self.size = np.empty(1024, dtype=dtype), 0

    def extend(self, values: np.ndarray) -> None:
        need = self.size + len(values)
        if need > len(self.data):
            grown = np.empty(max(need, 2 * len(self.data)), dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : need] = values
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


_SPACE_SAFE_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Strip"}
_SPACE_SAFE_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}


def _component_types(spec: dict | None, members: str) -> set[str]:
    if spec is None:
        return set()
    if spec["type"] == "Sequence":
        return set().union(*(_component_types(s, members) for s in spec[members]))
    return {spec["type"]}


def _splits_at_spaces(tokenizer) -> bool:
    """Whether the tokenizer never lets a token span an ASCII space: then a text's tokens are the concatenation of
    its space-separated chunks' tokens, and each distinct chunk needs tokenizing only once."""
    if not getattr(tokenizer, "is_fast", False):
        return False
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre_tokenizers = _component_types(spec.get("pre_tokenizer"), "pretokenizers")
    added = tokenizer.added_tokens_decoder.values()
    return (
        _component_types(spec.get("normalizer"), "normalizers") <= _SPACE_SAFE_NORMALIZERS
        and bool(pre_tokenizers)
        and pre_tokenizers <= _SPACE_SAFE_PRE_TOKENIZERS
        and not any(" " in t.content or t.lstrip or t.rstrip or t.single_word for t in added)
    )


class _BagTokenizer:
    """(row, token id) pairs of a batch of texts, exactly the tokens of `tokenizer(texts, truncation=True,
    max_length=max_length)` without the special tokens added around them.

    When the tokenizer splits at spaces ([`_splits_at_spaces`]), each distinct space-separated chunk is tokenized
    once (joined with others into long texts, its tokens found back by their offsets) and texts are assembled from
    their chunks' tokens, truncated by cumulative counts; a corpus repeats most of its chunks, so this tokenizes a
    small fraction of the words. Other tokenizers tokenize every text.
    """

    max_cached_chunks = 2_000_000

    def __init__(self, tokenizer, max_length: int):
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer) if getattr(tokenizer, "is_fast", False) else None
        self.tokenizer, self.max_length = tokenizer, max_length
        self.by_chunks = _splits_at_spaces(tokenizer)
        if self.backend is not None:
            self.backend.no_padding()
            if self.by_chunks:  # chunks are tokenized whole; texts are truncated when assembled
                self.backend.no_truncation()
                self.limit = max(max_length - self.backend.num_special_tokens_to_add(False), 0)
                self._reset()
            else:
                self.backend.enable_truncation(max_length)

    def _reset(self) -> None:
        self.chunk_ids: dict[str, int] = {}
        self.lengths, self.starts, self.tokens = _Buffer(np.int64), _Buffer(np.int64), _Buffer(np.int32)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not self.by_chunks:
            return self._tokenize_whole(texts)
        if len(self.chunk_ids) > self.max_cached_chunks:
            self._reset()
        # Split and find the batch's distinct chunks in Arrow, then pass only those through the dict of all chunks.
        split = pc.split_pattern(pa.array(texts, type=pa.large_string()), " ")
        n_chunks = np.diff(split.offsets.to_numpy()).astype(np.int64)
        encoded = pc.dictionary_encode(split.flatten())
        ids, known = self.chunk_ids, len(self.chunk_ids)
        distinct = encoded.dictionary.to_pylist()
        chunk = np.fromiter((ids.setdefault(c, len(ids)) for c in distinct), dtype=np.int64, count=len(distinct))
        chunk = chunk[encoded.indices.to_numpy()]
        if len(ids) > known:
            self._tokenize_chunks(list(itertools.islice(reversed(ids), len(ids) - known))[::-1])
        lengths, starts = self.lengths.view[chunk], self.starts.view[chunk]
        before = np.cumsum(lengths) - lengths
        first = np.cumsum(n_chunks) - n_chunks
        before -= np.repeat(before[first], n_chunks)  # tokens before each chunk within its own text
        keep = np.clip(self.limit - before, 0, lengths)
        kept_before = np.cumsum(keep) - keep
        positions = np.repeat(starts - kept_before, keep) + np.arange(int(keep.sum()))
        rows = np.repeat(np.repeat(np.arange(len(texts)), n_chunks), keep)
        return rows, self.tokens.view[positions].astype(np.int64)

    def _tokenize_chunks(self, chunks: list[str], per_text: int = 2048) -> None:
        groups = [chunks[i : i + per_text] for i in range(0, len(chunks), per_text)]
        encodings = self.backend.encode_batch([" ".join(g) for g in groups], add_special_tokens=False)
        for group, encoding in zip(groups, encodings):
            chunk_starts = np.cumsum([0] + [len(c) + 1 for c in group[:-1]])
            token_starts = np.fromiter((o[0] for o in encoding.offsets), dtype=np.int64, count=len(encoding.ids))
            owner = np.searchsorted(chunk_starts, token_starts, side="right") - 1
            counts = np.bincount(owner, minlength=len(group))
            self.starts.extend(self.tokens.size + np.cumsum(counts) - counts)
            self.lengths.extend(counts)
            self.tokens.extend(np.asarray(encoding.ids, dtype=np.int32))

    def _tokenize_whole(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.backend is not None:
            encoded = [e.ids for e in self.backend.encode_batch_fast(texts)]
        else:
            encoded = self.tokenizer(
                texts,
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        tokens = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum()))
        return np.repeat(np.arange(len(encoded)), lengths), tokens
