"""The index at scale: distinct-chunk tokenization, the term-major CPU layout, shards, memory-mapped loading and the
checksum cache."""

import gzip
import json
import mmap
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from r3hf import BagOfTokensIndex, SparseEmbeddingIndex
from r3hf.index import INDEX_CONFIG, IndexShard, postings
from r3hf.utils import encoder_passage_text, parse_size

ROOT = Path(__file__).resolve().parents[1]

ADVERSARIAL = [
    "",
    "   ",
    "Café Ünïcödé naïve résumé",
    "東京は日本の首都です and 北京",
    "!!!???...,,,;;;---''\"\"((()))",
    "a" * 150 + " " + "b" * 99 + " supercalifragilisticexpialidocious",
    "tabs\tand\nnewlines\r\nand\u00a0non-breaking\u2003spaces",
    "control\x00chars\x1cand\x7fdel",
    "title [SEP] text with a literal [SEP] and x[SEP]y and [MASK]",
    "emoji 🎉🎉 and symbols € $ ¥ § ¶ © and under_score",
    "numbers 1,234.56 and 3.14159 and 10^9",
    " leading and trailing spaces  double  spaces ",
    " ".join(f"w{i}" for i in range(300)),  # truncation lands mid-text, every word distinct
    "Hyphen-ated words—em dashes–en dashes…ellipsis",
]


def expected_bags(tokenizer, texts, max_length):
    special = set(tokenizer.all_special_ids)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    return [set(ids) - special for ids in encoded]


def index_bags(index):
    return [set(index.indices[index.indptr[i] : index.indptr[i + 1]].tolist()) for i in range(len(index))]


@pytest.mark.parametrize("max_length", [3, 8, 32, 512])
def test_chunk_tokenization_matches_the_tokenizer_on_adversarial_text(bert_tokenizer, max_length):
    index = BagOfTokensIndex.build(ADVERSARIAL * 2, bert_tokenizer, max_length=max_length, batch_size=5)
    assert index_bags(index) == expected_bags(bert_tokenizer, ADVERSARIAL * 2, max_length)


def test_chunk_tokenization_matches_the_tokenizer_on_the_shared_corpus(bert_tokenizer):
    with gzip.open(ROOT / "data" / "corpus.jsonl.gz", "rt") as f:
        corpus = [json.loads(line) for line in f]
    index = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=128)
    texts = [encoder_passage_text(p) for p in corpus]
    assert index_bags(index) == expected_bags(bert_tokenizer, texts, 128)


def random_shards(n_rows, vocab, sizes, values=None, seed=0):
    """An index split into shards of the given sizes, and its dense `[n_rows, vocab]` matrix; `values` is the dtype
    of the non-zeros' weights (`None`: a binary index)."""
    rng = np.random.default_rng(seed)
    weights = {None: 1, "float16": rng.integers(1, 5, (n_rows, vocab)), "float32": rng.random((n_rows, vocab)) + 0.5}
    dense = (rng.random((n_rows, vocab)) < 0.05) * weights[values]
    dense[5] = dense[3]  # duplicated rows: ties
    dense[n_rows - 1] = dense[3]
    shards, start = [], 0
    for size in sizes:
        block = dense[start : start + size]
        indptr = np.concatenate([[0], np.cumsum((block != 0).sum(1))])
        rows, cols = np.nonzero(block)
        vals = block[rows, cols].astype(values) if values else None
        shards.append(IndexShard.from_csr(indptr, cols.astype(np.uint16), vals, vocab, start))
        start += size
    return shards, torch.from_numpy(dense.astype(values or np.float32)).float()


def make_index(cls, shards, vocab, tokenizer):
    corpus = [f"doc {i}" for i in range(sum(len(s) for s in shards))]
    return cls(shards, vocab, BagOfTokensIndex.build(corpus, tokenizer).corpus, tokenizer, 16)


@pytest.fixture(params=["compiled", "scipy"])
def kernel(request, monkeypatch):
    """Both term-major scoring paths: the numba scatter (when installed) and SciPy's CSC product."""
    if request.param == "compiled":
        pytest.importorskip("numba")
    monkeypatch.setattr(postings, "ENABLED", request.param == "compiled")
    assert postings.available() == (request.param == "compiled")
    return request.param


@pytest.mark.parametrize("values", [None, "float16", "float32"])
def test_term_major_and_row_major_layouts_give_identical_results(bert_tokenizer, values, kernel):
    vocab = len(bert_tokenizer)
    shards, dense = random_shards(40, vocab, [7, 20, 13], values=values)
    cls = SparseEmbeddingIndex if values else BagOfTokensIndex
    index = make_index(cls, shards, vocab, bert_tokenizer)
    torch.manual_seed(0)
    queries = torch.rand(6, vocab) * (torch.rand(6, vocab) < 0.3)
    queries[1] = torch.round(queries[1] * 4) / 4  # coarse values: many exact ties
    queries[2] = 0  # no overlap: every passage scores 0
    for k in (1, 5, 17, 40, 100):
        term = index.search(queries, k, layout="term_major", num_threads=2)
        row = index.search(queries, k, layout="row_major", chunk_size=6)
        assert torch.equal(term.rows, row.rows) and torch.equal(term.scores, row.scores), k
        ref = queries @ dense.T
        torch.testing.assert_close(term.scores, ref.gather(1, term.rows))
    sparse = index.search(queries.to_sparse(), 10)
    assert torch.equal(sparse.rows, index.search(queries, 10).rows)
    full = index.search(queries, 40)
    for k in (1, 3, 10, 11, 25):
        assert torch.equal(index.search(queries, k).rows, full.rows[:, :k])
    with pytest.raises(ValueError, match="layout must be"):
        index.search(queries, 3, layout="columns")


@pytest.mark.parametrize("values", [None, "float16", "float32"])
def test_every_cpu_kernel_gives_bitwise_identical_scores_without_torch_sparse_products(
    bert_tokenizer, values, monkeypatch
):
    """The CPU layouts sum with r3hf's own kernels (compiled or SciPy), never through torch's sparse CSR product,
    whose MKL summation order depends on the CPU's instruction set: every layout x kernel pair agrees bitwise."""
    vocab = len(bert_tokenizer)
    shards, _ = random_shards(40, vocab, [7, 20, 13], values=values)
    index = make_index(SparseEmbeddingIndex if values else BagOfTokensIndex, shards, vocab, bert_tokenizer)
    torch.manual_seed(3)
    queries = torch.rand(5, vocab) * (torch.rand(5, vocab) < 0.3)

    def no_torch_sparse(*args, **kwargs):
        raise AssertionError("CPU search called torch's sparse CSR product")

    monkeypatch.setattr(torch, "sparse_csr_tensor", no_torch_sparse)
    kernels = [True, False] if postings._numba_installed() else [False]
    results = []
    for enabled in kernels:
        monkeypatch.setattr(postings, "ENABLED", enabled)
        for layout in ("term_major", "row_major"):
            results.append(index.search(queries, 25, layout=layout, chunk_size=9, num_threads=2))
    for other in results[1:]:
        assert torch.equal(other.rows, results[0].rows) and torch.equal(other.scores, results[0].scores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_row_major_search_agrees_with_cpu_to_float32_rounding(bert_tokenizer):
    vocab = len(bert_tokenizer)
    shards, _ = random_shards(40, vocab, [7, 20, 13], values="float32")
    index = make_index(SparseEmbeddingIndex, shards, vocab, bert_tokenizer)
    queries = torch.rand(5, vocab) * (torch.rand(5, vocab) < 0.3)
    cpu, cuda = index.search(queries, 40), index.search(queries.cuda(), 40)
    # the same passages' scores, compared by id: near-ties may swap places between devices
    cpu_by_id = torch.zeros(5, 40).scatter(1, cpu.rows, cpu.scores)
    cuda_by_id = torch.zeros(5, 40).scatter(1, cuda.rows.cpu(), cuda.scores.cpu())
    torch.testing.assert_close(cuda_by_id, cpu_by_id, rtol=1e-5, atol=1e-5)


def test_term_major_search_on_the_shared_corpus_matches_row_major(bert_tokenizer, kernel):
    with gzip.open(ROOT / "data" / "corpus.jsonl.gz", "rt") as f:
        corpus = [json.loads(line) for line in f]
    index = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=128)
    torch.manual_seed(1)
    # elu1p-like queries: 768 active dimensions each, values with few bits so that ties are frequent
    queries = torch.zeros(16, index.vocab_size)
    for q in queries:
        q[torch.randperm(index.vocab_size)[:768]] = torch.round(torch.rand(768) * 8) / 8 + 1
    term, row = index.search(queries, 100, layout="term_major"), index.search(queries, 100, layout="row_major")
    assert torch.equal(term.rows, row.rows) and torch.equal(term.scores, row.scores)


def mapped(array: np.ndarray) -> bool:
    """Whether an array's memory is a mapping of a file (directly or through the views over it)."""
    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_sharded_save_and_memory_mapped_load(bert_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    corpus = [
        {"id": str(i), "title": f"T{i}", "text": f"passage {i} about river {i % 7} and city {i % 5}"}
        for i in range(60)
    ]
    index = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=16)
    small = index.shards[0].term_indptr.nbytes + 1500  # every shard holds the [V + 1] term offsets
    index.save_pretrained(tmp_path / "idx", max_shard_size=small)
    config = json.loads((tmp_path / "idx" / INDEX_CONFIG).read_text())
    assert len(config["shards"]) >= 3
    names = {p.name for p in (tmp_path / "idx").iterdir()}
    assert {f"index-00001-of-{len(config['shards']):05d}.safetensors", "README.md", "tokenizer"} <= names
    assert not {"index.safetensors", "corpus.parquet"} & names

    hashed = []
    monkeypatch.setattr("r3hf.file_cache.sha256_file", lambda path: hashed.append(path) or "not-used")
    loaded = BagOfTokensIndex.from_pretrained(tmp_path / "idx")  # checksums recorded by the save: no hashing
    assert hashed == []
    assert len(loaded.shards) == len(config["shards"])
    assert all(mapped(s.term_rows) for s in loaded.shards)
    assert np.array_equal(loaded.indptr, index.indptr) and np.array_equal(loaded.indices, index.indices)
    assert loaded.corpus.to_list() == index.corpus.to_list()
    queries = torch.rand(3, index.vocab_size) * (torch.rand(3, index.vocab_size) < 0.2)
    for layout in ("term_major", "row_major"):
        ours, theirs = loaded.search(queries, 20, layout=layout), index.search(queries, 20, layout=layout)
        assert torch.equal(ours.rows, theirs.rows) and torch.equal(ours.scores, theirs.scores)
    in_memory = BagOfTokensIndex.from_pretrained(tmp_path / "idx", mmap=False)
    assert not mapped(in_memory.shards[0].term_rows)

    # Saving again with one shard replaces the folder's data files and removes the ones it no longer uses.
    index.save_pretrained(tmp_path / "idx")
    assert {p.name for p in (tmp_path / "idx").glob("*.safetensors")} == {"index.safetensors"}
    assert not list((tmp_path / "idx").glob("corpus-*.parquet"))
    assert BagOfTokensIndex.from_pretrained(tmp_path / "idx").corpus.to_list() == index.corpus.to_list()


def test_checksums_are_recomputed_when_a_file_changes(bert_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    BagOfTokensIndex.build(["a river", "a city"], bert_tokenizer).save_pretrained(tmp_path / "idx")
    path = tmp_path / "idx" / "index.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, new content, new modification time
    path.write_bytes(bytes(data))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    with pytest.raises(ValueError, match="index.safetensors does not match its checksum .* re-download or rebuild"):
        BagOfTokensIndex.from_pretrained(tmp_path / "idx")
    assert BagOfTokensIndex.from_pretrained(tmp_path / "idx", verify=False) is not None


def test_bad_shards_are_clear_errors_and_a_failed_save_keeps_the_old_index(bert_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    corpus = [f"passage {i} about the river {i}" for i in range(40)]
    index = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=16)
    small = index.shards[0].term_indptr.nbytes + 1500
    index.save_pretrained(tmp_path / "a", max_shard_size=small)
    n = len(json.loads((tmp_path / "a" / INDEX_CONFIG).read_text())["shards"])
    assert n >= 2
    first, second = (f"index-{i:05d}-of-{n:05d}.safetensors" for i in (1, 2))

    # Another build with the same layout: its shard has the same name and size but other content.
    other_corpus = [c.replace("passage", "chapter").replace("river", "lake") for c in corpus]
    BagOfTokensIndex.build(other_corpus, bert_tokenizer, 16).save_pretrained(tmp_path / "b", max_shard_size=small)
    other = tmp_path / "b" / second
    original = (tmp_path / "a" / second).read_bytes()
    assert other.stat().st_size == len(original) and other.read_bytes() != original
    (tmp_path / "a" / second).write_bytes(other.read_bytes())
    with pytest.raises(ValueError, match=f"{second} does not match its checksum .* another build"):
        BagOfTokensIndex.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / second).write_bytes(original)

    (tmp_path / "a" / second).write_bytes(original[:-7])
    with pytest.raises(ValueError, match=f"{second} is missing or truncated .* re-download or rebuild"):
        BagOfTokensIndex.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / second).unlink()
    with pytest.raises(ValueError, match=f"{second} is missing or truncated"):
        BagOfTokensIndex.from_pretrained(tmp_path / "a")
    (tmp_path / "a" / second).write_bytes(original)

    # A shard whose passage count disagrees with the config (as from a build of another size), sizes and checksums
    # aside.
    config = json.loads((tmp_path / "a" / INDEX_CONFIG).read_text())
    config["shards"][0]["num_passages"] += 1
    config["shards"][1]["start"] += 1
    (tmp_path / "a" / INDEX_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"{first} holds .* passages, {INDEX_CONFIG} says .* another build"):
        BagOfTokensIndex.from_pretrained(tmp_path / "a")

    # A save that fails half-way leaves the index that was there loadable and unchanged.
    index.save_pretrained(tmp_path / "c", max_shard_size=small)
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir() if p.is_file()}

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("r3hf.index.csr_index.save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        BagOfTokensIndex.build(corpus[:5], bert_tokenizer).save_pretrained(tmp_path / "c")
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir() if p.is_file()} == before
    assert BagOfTokensIndex.from_pretrained(tmp_path / "c").corpus.to_list() == index.corpus.to_list()


def test_format_1_indexes_still_load(bert_tokenizer, tmp_path):
    from safetensors.numpy import save_file

    index = BagOfTokensIndex.build(["a river", "a city", "the king"], bert_tokenizer)
    index.save_pretrained(tmp_path)
    config = json.loads((tmp_path / INDEX_CONFIG).read_text())
    save_file({"indptr": index.indptr, "indices": index.indices}, tmp_path / "index.safetensors")
    config.pop("shards")
    config["format_version"] = 1
    config["files"]["index.safetensors"] = {"size": (tmp_path / "index.safetensors").stat().st_size, "sha256": ""}
    (tmp_path / INDEX_CONFIG).write_text(json.dumps(config))
    loaded = BagOfTokensIndex.from_pretrained(tmp_path, verify=False)
    assert np.array_equal(loaded.shards[0].term_rows, index.shards[0].term_rows)
    config["format_version"] = 99
    (tmp_path / INDEX_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 99; .* upgrade r3hf"):
        BagOfTokensIndex.from_pretrained(tmp_path, verify=False)


def test_building_in_two_processes_gives_the_same_index_in_two_shards(bert_tokenizer):
    corpus = [f"passage {i} about the river {i % 13} and {i}" for i in range(50)]
    single = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=12)
    double = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=12, num_proc=2)
    assert [s.start for s in double.shards] == [0, 25]
    assert np.array_equal(double.indptr, single.indptr) and np.array_equal(double.indices, single.indices)
    queries = torch.rand(2, single.vocab_size)
    assert torch.equal(double.search(queries, 30).rows, single.search(queries, 30).rows)
    bounded = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=12, batch_size=4, rows_per_shard=10)
    assert [len(s) for s in bounded.shards] == [12, 12, 12, 12, 2]  # whole batches of 4, at least 10 rows
    assert np.array_equal(bounded.indices, single.indices)
    for layout in ("term_major", "row_major"):
        ours, theirs = bounded.search(queries, 30, layout=layout), single.search(queries, 30, layout=layout)
        assert torch.equal(ours.rows, theirs.rows) and torch.equal(ours.scores, theirs.scores)


def test_bad_build_settings_are_clear_errors(bert_tokenizer):
    with pytest.raises(ValueError, match="rows_per_shard must be at least 1"):
        BagOfTokensIndex.build(["a river"], bert_tokenizer, rows_per_shard=0)
    with pytest.raises(ValueError, match="num_proc must be at least 1"):
        BagOfTokensIndex.build(["a river"], bert_tokenizer, num_proc=0)


def test_parse_size():
    assert (
        parse_size("500MB") == 500_000_000
        and parse_size("300KB") == 300_000
        and parse_size("2GiB") == 2 * 1024**3
        and parse_size(123) == 123
    )
    with pytest.raises(ValueError, match="'500 parsecs'"):
        parse_size("500 parsecs")


@pytest.mark.parametrize(
    "ids", [["10", "2", "33", "0"], [10, 2, 33, 0], ["doc-b", "doc-a", "ü-c", "d"], ["7", "07", "x", "8"]]
)
def test_rows_of_passage_ids(bert_tokenizer, ids):
    corpus = [{"id": i, "text": f"passage {n}"} for n, i in enumerate(ids)]
    index = BagOfTokensIndex.build(corpus, bert_tokenizer)
    asked = [ids[2], ids[0], "missing", ids[3], "007", "a-much-longer-id-than-any", ids[1]]
    assert index.rows_of(asked).tolist() == [2, 0, -1, 3, -1, -1, 1]
    assert index.rows_of([]).tolist() == []


def test_tokenizers_that_do_not_split_at_spaces_tokenize_whole_texts():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from r3hf.index.tokenization import _splits_at_spaces

    vocab = {"[UNK]": 0, "▁a": 1, "▁river": 2, "▁city": 3, "▁king": 4}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()  # the space becomes part of the next token
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    assert not _splits_at_spaces(tokenizer)
    texts = ["a river", "a city a king", "king river city a"]
    index = BagOfTokensIndex.build(texts, tokenizer, max_length=3)
    assert index_bags(index) == expected_bags(tokenizer, texts, 3)
    assert index_bags(index)[2] == {4, 2, 3}  # truncated to 3 tokens


def test_term_major_scores_reject_out_of_range_terms_and_short_buffers(kernel):
    shards, _ = random_shards(10, 50, [10])
    shard = shards[0]
    weights = np.ones(2, dtype=np.float32)
    for terms in ([3, 50], [-1, 3]):
        with pytest.raises(ValueError, match="Term ids must lie in"):
            shard.term_major_scores(np.array(terms), weights)
    with pytest.raises(ValueError, match="at least 10 scores"):
        shard.term_major_scores(np.array([3, 4]), weights, out=np.zeros(5, dtype=np.float32))
    out = np.full(12, 7.0, dtype=np.float32)
    scores = shard.term_major_scores(np.array([3, 4]), weights, out=out)
    assert np.array_equal(scores, shard.term_major_scores(np.array([3, 4]), weights))


def test_compiled_kernels_fall_back_to_per_process_compilation_without_a_cache_location(monkeypatch):
    numba = pytest.importorskip("numba")
    njit = numba.njit

    def njit_without_cache(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return njit(**options)

    monkeypatch.setattr(numba, "njit", njit_without_cache)
    monkeypatch.setattr(postings, "_kernels", postings._kernels.__wrapped__)  # compile afresh
    shards, dense = random_shards(12, 40, [12])
    terms, weights = np.array([1, 5, 7]), np.array([0.5, 2.0, 1.5], dtype=np.float32)
    scores = shards[0].term_major_scores(terms, weights)
    expected = dense[:, terms].numpy() @ weights
    assert np.allclose(scores, expected)
