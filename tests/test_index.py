import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from r3hf import BagOfTokensIndex, SearchResults, SparseEmbeddingIndex
from r3hf.index import INDEX_CONFIG
from r3hf.retrieval import retrieve
from r3hf.utils import encoder_passage_text
from tests.testing_utils import dense_document, dense_query

CORPUS = [
    {"id": "a", "title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
    {"id": "b", "title": "Everest", "text": "Mount Everest is the highest mountain on Earth."},
    {"id": "c", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "d", "title": "Python", "text": "Python is a programming language created by Guido van Rossum."},
    {"id": "e", "title": "Nile", "text": "The Nile is a major river in north-eastern Africa."},
    {"id": "f", "title": "Moon", "text": "The Moon is Earth's only natural satellite."},
]
QUERIES = ["who wrote hamlet", "highest mountain on earth", "capital of france"]


def random_index(bert_tokenizer, n_docs=57, vocab=30522, density=0.01, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_docs, vocab)) < density
    indptr = np.concatenate([[0], np.cumsum(dense.sum(1))])
    indices = np.nonzero(dense)[1].astype(np.uint16)
    corpus = BagOfTokensIndex.build([f"doc {i}" for i in range(n_docs)], bert_tokenizer).corpus
    return BagOfTokensIndex((indptr, indices, None), vocab, corpus, bert_tokenizer, 256), torch.from_numpy(
        dense
    ).float()


def test_search_is_exact_against_a_dense_reference(bert_tokenizer):
    index, dense = random_index(bert_tokenizer)
    torch.manual_seed(0)
    queries = torch.rand(5, dense.shape[1]) * (torch.rand(5, dense.shape[1]) < 0.05)
    ref = (queries @ dense.T).topk(11)
    # The dense product sums in BLAS's order, the index in its own: ids can be compared exactly only because no two
    # of these scores are within float32 error of each other (checked, so a failure says why).
    assert (ref.values[:, :-1] - ref.values[:, 1:]).min() > 1e-4
    ref = (queries @ dense.T).topk(10)
    res = index.search(queries, k=10)
    assert isinstance(res, SearchResults) and res.rows.dtype == torch.long
    torch.testing.assert_close(res.scores, ref.values)
    assert torch.equal(res.rows, ref.indices)


def test_chunking_gives_identical_results(bert_tokenizer):
    index, dense = random_index(bert_tokenizer)
    queries = torch.rand(4, dense.shape[1])
    whole, chunked = index.search(queries, k=20), index.search(queries, k=20, chunk_size=7)
    assert torch.equal(whole.rows, chunked.rows) and torch.equal(whole.scores, chunked.scores)


def test_ties_and_k_larger_than_the_corpus(bert_tokenizer):
    index, dense = random_index(bert_tokenizer, n_docs=9)
    queries = torch.zeros(2, dense.shape[1])  # every passage scores 0: all tied
    res = index.search(queries, k=50, chunk_size=4)
    assert res.rows.shape == (2, 9)
    assert sorted(res.rows[0].tolist()) == list(range(9)) and (res.scores == 0).all()
    assert res.rows[0].tolist() == list(range(9))  # ties: lower row id first
    few = index.search(queries, k=3, chunk_size=4)
    assert few.rows[0].tolist() == [0, 1, 2]


def test_search_at_k_is_a_prefix_of_search_at_larger_k(bert_tokenizer):
    # Many duplicated passages: ties everywhere, including at every cut-off, across chunk boundaries.
    torch.manual_seed(0)
    texts = [" ".join(["river", "city", "king", "queen", "war", "song"][: 1 + i % 4]) for i in range(40)]
    index = BagOfTokensIndex.build(texts, bert_tokenizer)
    queries = torch.rand(5, len(bert_tokenizer)) * (torch.rand(5, len(bert_tokenizer)) > 0.5)
    for chunk_size in (7, 1000):
        full = index.search(queries, k=40, chunk_size=chunk_size)
        for k in (1, 3, 10, 11, 25):
            assert torch.equal(index.search(queries, k=k, chunk_size=chunk_size).rows, full.rows[:, :k]), (
                chunk_size,
                k,
            )
        for scores, ids in zip(full.scores.tolist(), full.rows.tolist()):  # score descending, then lower row id
            assert all((s1, -i1) >= (s2, -i2) for s1, i1, s2, i2 in zip(scores, ids, scores[1:], ids[1:]))


def test_build_stores_the_token_sets(bert_tokenizer):
    truncation = bert_tokenizer.backend_tokenizer.truncation
    index = BagOfTokensIndex.build(CORPUS, bert_tokenizer, max_length=8)
    assert bert_tokenizer.backend_tokenizer.truncation == truncation  # the caller's tokenizer is left as it was
    # truncation is exercised
    assert max(len(bert_tokenizer(encoder_passage_text(p))["input_ids"]) for p in CORPUS) > 8
    assert len(index) == len(CORPUS) and index.indices.dtype == np.uint16
    for i, passage in enumerate(CORPUS):
        ids = bert_tokenizer(f"{passage['title']} [SEP] {passage['text']}", truncation=True, max_length=8)["input_ids"]
        expected = set(ids) - set(bert_tokenizer.all_special_ids)
        assert set(index.indices[index.indptr[i] : index.indptr[i + 1]].tolist()) == expected
    assert index.corpus[2]["id"] == "c"
    from_strings = BagOfTokensIndex.build([f"{p['title']} [SEP] {p['text']}" for p in CORPUS], bert_tokenizer, 8)
    assert np.array_equal(from_strings.indices, index.indices)
    from_dataset = BagOfTokensIndex.build(index.corpus, bert_tokenizer, 8)
    assert np.array_equal(from_dataset.indptr, index.indptr)
    in_batches = BagOfTokensIndex.build(CORPUS, bert_tokenizer, 8, batch_size=4)
    assert np.array_equal(in_batches.indptr, index.indptr) and np.array_equal(in_batches.indices, index.indices)


def test_bag_of_tokens_search_matches_model_bag_of_tokens(tiny_sidr, bert_tokenizer):
    index = BagOfTokensIndex.build(CORPUS, bert_tokenizer, max_length=tiny_sidr.config.passage_max_length)
    q = dense_query(tiny_sidr, QUERIES)
    ref = (q @ tiny_sidr.bag_of_tokens(CORPUS).T).topk(4)
    res = index.search(q, k=4)
    torch.testing.assert_close(res.scores, ref.values)


def test_save_load_round_trip(bert_tokenizer, tmp_path):
    index = BagOfTokensIndex.build(CORPUS, bert_tokenizer)
    index.save_pretrained(tmp_path / "idx")
    assert {"index.safetensors", "corpus.parquet", INDEX_CONFIG, "README.md", "tokenizer"} <= {
        p.name for p in (tmp_path / "idx").iterdir()
    }
    assert not [p for p in (tmp_path / "idx").iterdir() if p.name.startswith(".tmp")]
    loaded = BagOfTokensIndex.from_pretrained(tmp_path / "idx")
    assert np.array_equal(loaded.indptr, index.indptr) and np.array_equal(loaded.indices, index.indices)
    assert loaded.corpus.to_list() == index.corpus.to_list()
    q = torch.rand(2, 30522)
    assert torch.equal(loaded.search(q, 3).rows, index.search(q, 3).rows)
    assert "BagOfTokensIndex.from_pretrained" in (tmp_path / "idx" / "README.md").read_text()
    index.save_pretrained(tmp_path / "idx")  # overwriting an existing index works
    BagOfTokensIndex.from_pretrained(tmp_path / "idx", tokenizer=bert_tokenizer)
    with pytest.raises(ValueError, match="not 'sparse_embedding'"):
        SparseEmbeddingIndex.from_pretrained(tmp_path / "idx")


def test_tokenizer_mismatch_is_refused(bert_tokenizer, tmp_path):
    BagOfTokensIndex.build(CORPUS, bert_tokenizer).save_pretrained(tmp_path)
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "hamlet": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", name_or_path="tiny-wordlevel")
    with pytest.raises(ValueError, match="'tiny-wordlevel' has a different vocabulary .* rebuild the index"):
        BagOfTokensIndex.from_pretrained(tmp_path, tokenizer=other)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_file_is_refused(bert_tokenizer, tmp_path, damage):
    BagOfTokensIndex.build(CORPUS, bert_tokenizer).save_pretrained(tmp_path)
    path = tmp_path / "index.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="does not match its checksum"):
            BagOfTokensIndex.from_pretrained(tmp_path)
    else:
        path.write_bytes(bytes(data[:-10]))
        with pytest.raises(ValueError, match="missing or truncated"):
            BagOfTokensIndex.from_pretrained(tmp_path)


def test_late_parametric_rerank_equals_brute_force(tiny_sidr, bert_tokenizer):
    index = BagOfTokensIndex.build(CORPUS, bert_tokenizer, max_length=tiny_sidr.config.passage_max_length)
    res = tiny_sidr.retrieve(QUERIES, index, k=2, rerank_top_m=4)
    candidates = index.search(dense_query(tiny_sidr, QUERIES), k=4)
    for qi, query in enumerate(QUERIES):
        q = dense_query(tiny_sidr, [query])[0]
        brute = sorted(
            ((float(q @ dense_document(tiny_sidr, [CORPUS[d]])[0]), d) for d in candidates.rows[qi].tolist()),
            key=lambda x: -x[0],
        )[:2]
        assert res.rows[qi].tolist() == [d for _, d in brute]
        torch.testing.assert_close(res.scores[qi], torch.tensor([s for s, _ in brute]), rtol=1e-5, atol=1e-4)


def test_full_parametric_index_matches_rerank_of_everything(tiny_sidr, bert_tokenizer, tmp_path):
    bot = BagOfTokensIndex.build(CORPUS, bert_tokenizer, max_length=tiny_sidr.config.passage_max_length)
    para = SparseEmbeddingIndex.build(CORPUS, tiny_sidr, batch_size=4)
    assert para.values.dtype == np.float16 and len(para.indices) == len(CORPUS) * tiny_sidr.config.max_active_dims
    late = tiny_sidr.retrieve(QUERIES, bot, k=3, rerank_top_m=len(CORPUS))
    full = tiny_sidr.retrieve(QUERIES, para, k=3)
    torch.testing.assert_close(full.scores, late.scores, rtol=2e-3, atol=1e-2)
    para.save_pretrained(tmp_path)
    again = SparseEmbeddingIndex.from_pretrained(tmp_path)
    assert again.extra["max_active_dims"] == tiny_sidr.config.max_active_dims
    assert torch.equal(retrieve(tiny_sidr, QUERIES, again, k=3).rows, full.rows)


def test_empty_inputs_are_clear_errors(tiny_sidr, bert_tokenizer):
    with pytest.raises(ValueError, match="corpus is empty"):
        BagOfTokensIndex.build([], bert_tokenizer)
    index = BagOfTokensIndex.build(CORPUS, bert_tokenizer)
    with pytest.raises(ValueError, match="non-empty"):
        index.search(torch.zeros(0, 30522), k=3)
    with pytest.raises(ValueError, match="empty list"):
        tiny_sidr.retrieve([], index)
    with pytest.raises(ValueError, match="rerank_top_m"):
        tiny_sidr.retrieve(QUERIES, index, k=5, rerank_top_m=2)
    with pytest.raises(TypeError, match="only strings or only"):
        BagOfTokensIndex.build(["a", 1], bert_tokenizer)


def test_push_to_hub_uploads_a_dataset_repo(bert_tokenizer, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, **kwargs):
            from pathlib import Path

            calls["files"] = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
            calls["upload"] = kwargs
            return type("CommitInfo", (), {"commit_url": "https://hub/commit/1"})()

    monkeypatch.setattr("r3hf.hub.HfApi", FakeApi)
    url = BagOfTokensIndex.build(CORPUS, bert_tokenizer).push_to_hub("me/idx", private=True)
    assert url == "https://hub/commit/1"
    assert calls["create"] == ("me/idx", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls["upload"]["repo_type"] == "dataset" and calls["upload"]["repo_id"] == "me/idx"
    assert {"index.safetensors", "corpus.parquet", INDEX_CONFIG, "README.md"} <= set(calls["files"])


def test_adds_and_deletes_search_as_a_fresh_build_and_save_compacts(bert_tokenizer, tmp_path):
    from r3hf import load_table

    corpus = load_table("data/corpus.jsonl.gz").select(range(300))
    index = BagOfTokensIndex.build(corpus.select(range(200)), bert_tokenizer, max_length=48)
    index.add_bm25()
    assert index.add(corpus.select(range(200, 300))) == list(range(200, 300))
    deleted = [3, 150, 250, 299]
    index.delete(deleted)
    live = [i for i in range(300) if i not in deleted]
    fresh = BagOfTokensIndex.build(corpus.select(live), bert_tokenizer, max_length=48)
    torch.manual_seed(0)
    queries = torch.rand(5, index.vocab_size) * (torch.rand(5, index.vocab_size) < 0.05)
    for k in (1, 10, 296):
        ours, theirs = index.search(queries, k=k), fresh.search(queries, k=k)
        assert torch.equal(torch.tensor(live)[theirs.rows], ours.rows) and torch.equal(theirs.scores, ours.scores)
    with pytest.raises(ValueError, match="added to or deleted from this index.*add_bm25"):
        index.require_bm25()
    index.save_pretrained(tmp_path / "saved")
    loaded = BagOfTokensIndex.from_pretrained(tmp_path / "saved", tokenizer=bert_tokenizer)
    assert len(loaded) == 296 and loaded.corpus["id"] == fresh.corpus["id"]
    assert torch.equal(loaded.search(queries, k=10).rows, fresh.search(queries, k=10).rows)
    with pytest.raises(IndexError, match="rows_of"):
        index.delete([300])
    with pytest.raises(ValueError, match="same fields"):
        index.add([{"text": "no id or title"}])


@pytest.mark.parametrize("compiled", [True, False])
def test_query_cut_scores_its_candidates_exactly(bert_tokenizer, compiled, monkeypatch):
    from r3hf import load_table
    from r3hf.index import postings

    monkeypatch.setattr(postings, "ENABLED", compiled)
    corpus = load_table("data/corpus.jsonl.gz").select(range(400))
    index = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=48, rows_per_shard=150)
    torch.manual_seed(0)
    queries = torch.rand(6, index.vocab_size) * (torch.rand(6, index.vocab_size) < 0.03)
    exact = index.search(queries, k=20)
    # every active term gathers every passage that shares one with the query: the exact search (20 always overlap)
    assert torch.equal(index.search(queries, k=20, query_cut=index.vocab_size).rows, exact.rows)
    pruned = index.search(queries, k=20, query_cut=8)
    everything = index.search(queries, k=len(index))
    for q in range(len(queries)):
        top = queries[q].topk(8).indices.tolist()
        for row, score in zip(pruned.rows[q].tolist(), pruned.scores[q].tolist()):
            if row < 0:
                assert score == float("-inf")
                continue
            assert set(top) & set(index.indices[index.indptr[row] : index.indptr[row + 1]].tolist())
            assert score == everything.scores[q][everything.rows[q] == row].item()  # bitwise the exact score
    index.delete(exact.rows[:, 0].tolist())
    assert not set(exact.rows[:, 0].tolist()) & set(index.search(queries, k=20, query_cut=8).rows.flatten().tolist())
    with pytest.raises(ValueError, match="query_cut must be a positive"):
        index.search(queries, k=5, query_cut=0)
