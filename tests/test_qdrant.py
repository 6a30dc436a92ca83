"""Serving from Qdrant, in-process: the same rows and scores as r3hf's own search in every pipeline and mode, a
resumable export, updates, restarts from disk, and every bad input refused without changing the collection."""

import json

import pytest
import torch

from r3hf import BagOfTokensIndex, RAGEvaluator, load_table
from r3hf.integrations.qdrant import QdrantRetriever, delete_passages, export_index
from tests.test_evaluation import CountingReader
from tests.testing_utils import make_tiny_sidr

qdrant_client = pytest.importorskip("qdrant_client")
QdrantClient = qdrant_client.QdrantClient
# Each matches more than rerank_top_m passages by BM25: below that, bm25s fills its top m with arbitrary passages of
# score 0, which Qdrant leaves out (the one difference between the two, docs/guides/qdrant.md).
QUERIES = ["who wrote hamlet", "what is the capital of france", "when was the eiffel tower built", "which river flows"]
PIPELINES = [("bag_of_tokens", "none"), ("bm25", "none"), ("bm25", "rrf"), ("hybrid", "none"), ("hybrid", "score")]


@pytest.fixture(scope="module")
def model(bert_tokenizer):
    # 768 active dimensions, as a real SIDR: Qdrant leaves out passages that share no dimension with the query
    return make_tiny_sidr(bert_tokenizer, max_active_dims=768, passage_max_length=48)


@pytest.fixture(scope="module")
def index(bert_tokenizer):
    corpus = load_table("data/corpus.jsonl.gz").select(range(160))
    index = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=48)
    index.add_bm25()
    return index


@pytest.fixture(scope="module")
def collection(index, model):
    client = QdrantClient(":memory:")
    assert export_index(index, client, "passages", model=model) == {"passages": 160, "added": 160, "deleted": 0}
    return client


def assert_same_results(ours, theirs):
    assert torch.equal(ours.rows, theirs.rows)
    torch.testing.assert_close(theirs.scores, ours.scores, rtol=1e-5, atol=1e-5)  # float32 rounding


@pytest.mark.parametrize(("first_stage", "fusion"), PIPELINES)
@pytest.mark.parametrize("stored_embeddings", [True, False])
def test_every_pipeline_gives_r3hfs_own_rows_and_scores(
    collection, index, model, first_stage, fusion, stored_embeddings
):
    retriever = QdrantRetriever(
        collection, "passages", model, first_stage=first_stage, rerank_top_m=12, fusion=fusion, bm25=index.bm25
    )
    assert retriever.use_stored_embeddings
    retriever.use_stored_embeddings = stored_embeddings  # without `emb`, the model re-embeds the payload text
    ours = model.retrieve(QUERIES, index, k=5, rerank_top_m=12, first_stage=first_stage, fusion=fusion)
    assert_same_results(ours, retriever.retrieve(QUERIES, k=5))


def test_a_collection_without_embeddings_re_ranks_with_the_model(index, model):
    client = QdrantClient(":memory:")
    export_index(index, client, "bags")  # T(d) and bm25 only: SiDR's storage argument
    retriever = QdrantRetriever(client, "bags", model, first_stage="hybrid", rerank_top_m=12, bm25=index.bm25)
    assert not retriever.use_stored_embeddings
    ours = model.retrieve(QUERIES, index, k=5, rerank_top_m=12, first_stage="hybrid")
    assert_same_results(ours, retriever.retrieve(QUERIES, k=5))


def test_rag_evaluator_gives_the_same_per_question_results(collection, index, model):
    answers = [["Shakespeare"], ["Paris"], ["1889"], ["Danube"]]
    evaluator = RAGEvaluator(
        QUERIES, answers, index, reader=CountingReader(), rerank_top_m=12, recall_at=[1, 5], first_stage="hybrid"
    )
    retriever = QdrantRetriever(collection, "passages", model, bm25=index.bm25)
    assert evaluator.predict(retriever) == evaluator.predict(model)


def test_an_interrupted_export_resumes_with_every_passage_once(index, model, monkeypatch):
    client = QdrantClient(":memory:")
    upsert, calls = client.upsert, []

    def failing_upsert(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("the server went away")
        return upsert(*args, **kwargs)

    monkeypatch.setattr(client, "upsert", failing_upsert)
    with pytest.raises(ConnectionError):
        export_index(index, client, "passages", batch_size=64)
    assert client.count("passages").count == 64
    assert export_index(index, client, "passages", batch_size=64) == {"passages": 160, "added": 96, "deleted": 0}
    assert client.count("passages").count == 160
    rows = sorted(p.id for p in client.scroll("passages", limit=1000)[0])
    assert rows == list(range(160))
    assert export_index(index, client, "passages")["added"] == 0


def test_restart_from_disk_and_updates(bert_tokenizer, model, tmp_path):
    corpus = load_table("data/corpus.jsonl.gz").select(range(120))
    small = BagOfTokensIndex.build(corpus.select(range(100)), bert_tokenizer, max_length=48)
    grown = BagOfTokensIndex.build(corpus, bert_tokenizer, max_length=48)
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    export_index(small, client, "passages", model=model)
    client.close()
    client = QdrantClient(path=str(tmp_path / "qdrant"))  # a restart: the collection and its settings are on disk
    assert export_index(grown, client, "passages", model=model) == {"passages": 120, "added": 20, "deleted": 0}
    retriever = QdrantRetriever(client, "passages", model, rerank_top_m=12)
    assert_same_results(model.retrieve(QUERIES, grown, k=5, rerank_top_m=12), retriever.retrieve(QUERIES, k=5))
    best = retriever.retrieve(QUERIES, k=1).rows[:, 0].tolist()
    delete_passages(client, "passages", best)
    after = retriever.retrieve(QUERIES, k=5).rows
    assert not set(best) & set(after.flatten().tolist()) and client.count("passages").count == 120 - len(set(best))
    grown.delete([5, 6])  # deleted from the index: the next export removes them from the collection too
    counts = export_index(grown, client, "passages", model=model)
    assert counts["deleted"] == 2 and counts["added"] == len(set(best) - {5, 6})
    assert client.count("passages").count == 118
    assert_same_results(model.retrieve(QUERIES, grown, k=5, rerank_top_m=12), retriever.retrieve(QUERIES, k=5))
    client.close()


def test_bad_input_is_refused_and_changes_nothing(collection, index, model, bert_tokenizer, monkeypatch):
    def state():
        return collection.count("passages").count, collection.get_collection("passages").config.metadata

    before = state()
    other_model = make_tiny_sidr(bert_tokenizer, seed=1, max_active_dims=768, passage_max_length=48)
    with pytest.raises(ValueError, match="'passages' was built for another model.*Nothing was changed"):
        export_index(index, collection, "passages", model=other_model)
    without_bm25 = BagOfTokensIndex(index.shards, index.vocab_size, index.corpus, index.tokenizer, index.max_length)
    with pytest.raises(ValueError, match="another bm25s part"):
        export_index(without_bm25, collection, "passages", model=model)
    other_tokenizer = type(bert_tokenizer).from_pretrained(bert_tokenizer.name_or_path)
    other_tokenizer.add_tokens(["qdrantonlytoken"])
    other_vocab = BagOfTokensIndex.build(index.corpus, other_tokenizer, max_length=48)
    with pytest.raises(ValueError, match="another tokenizer"):
        export_index(other_vocab, collection, "passages")
    assert state() == before

    client = QdrantClient(":memory:")
    export_index(without_bm25, client, "bags")
    shifted = BagOfTokensIndex.build(index.corpus.select(range(1, 160)), bert_tokenizer, max_length=48)
    with pytest.raises(ValueError, match="another corpus \\(row 0 holds passage"):
        export_index(shifted, client, "bags")
    assert client.count("bags").count == 160
    with pytest.raises(ValueError, match="needs the collection's 'bm25' vector"):
        QdrantRetriever(client, "bags", model, first_stage="hybrid", bm25=index.bm25)
    other_corpus = BagOfTokensIndex.build(index.corpus.select(range(1, 160)), bert_tokenizer, max_length=48)
    with pytest.raises(ValueError, match="bm25= is the bm25s part of another corpus"):
        QdrantRetriever(collection, "passages", model, first_stage="hybrid", bm25=other_corpus.add_bm25())
    with pytest.raises(ValueError, match="needs bm25="):
        QdrantRetriever(collection, "passages", model, first_stage="bm25")
    with pytest.raises(ValueError, match="first_stage must be one of"):
        QdrantRetriever(collection, "passages", model, first_stage="dense")
    with pytest.raises(ValueError, match="No Qdrant collection 'nowhere'"):
        QdrantRetriever(collection, "nowhere", model)
    monkeypatch.setitem(__import__("sys").modules, "qdrant_client", None)
    with pytest.raises(ImportError, match="r3hf\\[qdrant\\]"):
        export_index(index, collection, "passages")


def test_the_command_line_exports_and_searches_through_qdrant(index, model, tmp_path, capsys):
    from r3hf.cli import main as cli_main

    model.save_pretrained(tmp_path / "sidr")
    index.save_pretrained(tmp_path / "idx")
    store = str(tmp_path / "qdrant")
    export = ["index", "export", "qdrant", "--index", str(tmp_path / "idx"), "--qdrant", store]
    cli_main([*export, "--collection", "demo", "--retriever", str(tmp_path / "sidr")])
    assert "Collection 'demo' holds 160 passages (160 added now)" in capsys.readouterr().out
    search = ["search", *QUERIES[:2], "--retriever", str(tmp_path / "sidr"), "-k", "3", "--rerank-top-m", "12"]
    cli_main([*search, "--index", str(tmp_path / "idx"), "--first-stage", "hybrid"])
    local = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    cli_main(
        [
            *search,
            "--qdrant",
            store,
            "--collection",
            "demo",
            "--index",
            str(tmp_path / "idx"),
            "--first-stage",
            "hybrid",
        ]
    )
    served = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [[r["id"] for r in q["results"]] for q in served] == [[r["id"] for r in q["results"]] for q in local]
    with pytest.raises(SystemExit, match="cannot reach Qdrant at http://127.0.0.1:9"):
        cli_main([*search, "--qdrant", "http://127.0.0.1:9", "--collection", "demo"])
    with pytest.raises(SystemExit, match="needs --index"):
        cli_main([*search, "--qdrant", store, "--collection", "demo", "--first-stage", "bm25"])
