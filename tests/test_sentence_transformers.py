"""Every saved SIDR folder is a sentence-transformers SparseEncoder with the same vectors, locally and through the
loopback Hub; RAGEvaluator evaluates any SparseEncoder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r3hf import BagOfTokensIndex, BM25Retriever, RAGEvaluator, SIDRModel, SparseEmbeddingIndex, compare_predictions
from r3hf.assets import offline_model_path
from r3hf.integrations.sparse_encoder_files import SPARSE_ENCODER_FILES
from tests.fake_hub import FakeHub
from tests.test_evaluation import CountingReader
from tests.testing_utils import make_tiny_sidr

sentence_transformers = pytest.importorskip("sentence_transformers")
SparseEncoder = sentence_transformers.SparseEncoder
ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["who wrote hamlet?", "what is the capital of france", "when did the berlin wall fall"]
PASSAGES = [
    "Hamlet is a tragedy written by William Shakespeare sometime between 1599 and 1601.",
    "Paris is the capital and most populous city of France, on the Seine.",
    "The Berlin Wall fell on 9 November 1989, opening the border between East and West Berlin.",
    "Rome is the capital of Italy.",
]


def assert_same_vectors(sidr: SIDRModel, st) -> None:
    """Both sides: max relative error ≤ 1e-5, the same active dimensions, the same top-10 ranking of passages."""
    for ours, theirs, texts in (
        (sidr.encode_query, st.encode_query, QUERIES),
        (sidr.encode_document, st.encode_document, PASSAGES),
    ):
        a = ours(texts, convert_to_sparse_tensor=False)
        b = theirs(texts, convert_to_sparse_tensor=False)
        assert ((b - a).abs().max() / a.abs().max()).item() <= 1e-5
        assert torch.equal(a != 0, b != 0)
    scores_ours = sidr.similarity(sidr.encode_query(QUERIES), sidr.encode_document(PASSAGES))
    scores_st = st.similarity(st.encode_query(QUERIES), st.encode_document(PASSAGES))
    top = min(10, len(PASSAGES))
    assert torch.equal(scores_ours.topk(top).indices, scores_st.topk(top).indices)


@pytest.mark.parametrize("shared_encoder", [False, True])
def test_a_saved_retriever_loads_as_a_sparse_encoder_with_the_same_vectors(bert_tokenizer, tmp_path, shared_encoder):
    sidr = make_tiny_sidr(bert_tokenizer, shared_encoder=shared_encoder, max_active_dims=48)
    sidr.save_pretrained(tmp_path)
    assert set(SPARSE_ENCODER_FILES) <= set(os.listdir(tmp_path))
    assert [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")] == ["model.safetensors"]  # one copy
    st = SparseEncoder(str(tmp_path), trust_remote_code=True)
    assert st.max_active_dims == 48 and st.similarity_fn_name == "dot"
    assert st.get_embedding_dimension() == sidr.config.vocab_size
    assert_same_vectors(sidr, st)
    assert "trust_remote_code=True" in (tmp_path / "README.md").read_text()
    # r3hf reads the folder as before, and a folder sentence-transformers saves again is still a SIDR checkpoint
    reloaded = SIDRModel.from_pretrained(tmp_path)
    assert torch.equal(reloaded.encode_query(QUERIES).to_dense(), sidr.encode_query(QUERIES).to_dense())
    st.save_pretrained(str(tmp_path / "again"))
    assert_same_vectors(SIDRModel.from_pretrained(tmp_path / "again"), st)


def test_without_trust_remote_code_sentence_transformers_refuses_the_module(tiny_sidr, tmp_path):
    tiny_sidr.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        SparseEncoder(str(tmp_path))


def test_a_folder_saved_before_the_sentence_transformers_files_is_refused_with_the_fix(tiny_sidr, tmp_path):
    tiny_sidr.save_pretrained(tmp_path)
    for name in SPARSE_ENCODER_FILES:  # as an older r3hf wrote it
        (tmp_path / name).unlink()
    with pytest.raises(ValueError, match="no modules.json.*save it again with save_pretrained"):
        SparseEncoder(str(tmp_path), trust_remote_code=True)
    SIDRModel.from_pretrained(tmp_path).save_pretrained(tmp_path)  # the fix the message names
    assert_same_vectors(tiny_sidr, SparseEncoder(str(tmp_path), trust_remote_code=True))


def test_an_original_sidr_checkpoint_exports_with_its_lexical_dimensions(bert_tokenizer, tmp_path):
    """`activate_lexical` (the original SiDR default) keeps a text's own tokens besides the top k: the module applies
    that union itself and sentence-transformers gets no `max_active_dims` to cut it with."""
    sidr = make_tiny_sidr(bert_tokenizer, max_active_dims=8, activate_lexical=True)
    sidr.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config_sentence_transformers.json").read_text())
    assert "max_active_dims" not in config
    st = SparseEncoder(str(tmp_path), trust_remote_code=True)
    assert_same_vectors(sidr, st)
    assert (sidr.encode_document(PASSAGES, convert_to_sparse_tensor=False) != 0).sum(1).min() > 8


def test_rag_evaluator_evaluates_a_splade_sparse_encoder_and_the_exported_sidr(bert_tokenizer, tiny_sidr, tmp_path):
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    mlm = Transformer(offline_model_path("splade-tiny"), transformer_task="fill-mask")
    splade = SparseEncoder(modules=[mlm, SpladePooling("max")])
    corpus = [{"id": str(i), "title": f"T{i}", "text": text} for i, text in enumerate(PASSAGES)]
    index = BagOfTokensIndex.build(corpus, bert_tokenizer)
    index.add_bm25()
    questions, answers = QUERIES, [["Shakespeare"], ["Paris"], ["1989"]]
    evaluator = RAGEvaluator(questions, answers, index, reader=CountingReader(), rerank_top_m=4, recall_at=[1, 2])
    splade_records = evaluator.predict(splade)
    bm25_records = evaluator.predict(BM25Retriever(index))
    assert [set(r) for r in splade_records] == [set(r) for r in bm25_records]
    assert compare_predictions(splade_records, bm25_records, "recall@1")["n"] == 3
    # over every passage of a parametric index built with the encoder: the same top passage as its own scores
    from r3hf.integrations.sparse_encoder_retriever import SparseEncoderRetriever

    full = SparseEmbeddingIndex.build(corpus, SparseEncoderRetriever(splade))
    best = splade.similarity(splade.encode_query(QUERIES), splade.encode_document(PASSAGES)).argmax(1)
    assert full.search(splade.encode_query(QUERIES).to_dense(), k=1).rows[:, 0].tolist() == best.tolist()
    # the exported SIDR gives r3hf's own per-question results, in each pipeline
    tiny_sidr.save_pretrained(tmp_path)
    exported = SparseEncoder(str(tmp_path), trust_remote_code=True)
    for first_stage in ("bag_of_tokens", "hybrid"):
        evaluator.first_stage = first_stage
        assert evaluator.predict(exported) == evaluator.predict(tiny_sidr)


def test_push_then_load_as_a_sparse_encoder_through_a_loopback_hub(tmp_path):
    script = """
import json, sys
import torch
from sentence_transformers import SparseEncoder
from transformers import AutoTokenizer
from r3hf.assets import offline_model_path
from tests.testing_utils import make_tiny_sidr
from tests.test_sentence_transformers import assert_same_vectors
for shared in (False, True):
    sidr = make_tiny_sidr(AutoTokenizer.from_pretrained(offline_model_path("splade-tiny")), shared_encoder=shared)
    repo = f"tester/tiny-sidr-{shared}"
    sidr.push_to_hub(repo)
    assert_same_vectors(sidr, SparseEncoder(repo, trust_remote_code=True))
print("ok")
"""
    with FakeHub() as hub:
        env = {**hub.client_env(tmp_path / "hf_home"), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-4000:]
        files = set(hub.repos[("model", "tester/tiny-sidr-False")]["files"])
        assert set(SPARSE_ENCODER_FILES) <= files and "model.safetensors" in files
