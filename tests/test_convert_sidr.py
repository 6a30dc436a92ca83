"""Original SiDR checkpoints: the converter, and loading the original layout directly, score exactly as the original code."""

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertConfig

from r3hf import SIDRModel, convert_sidr_checkpoint
from r3hf.assets import offline_model_path
from tests.test_modeling_sidr import PASSAGES, QUERIES
from tests.testing_utils import TINY_BERT, dense_document, dense_query, original_embed, write_original_checkpoint


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_converter_scores_exactly_as_the_original(tmp_path, bert_tokenizer, fmt):
    bert_config = BertConfig(vocab_size=len(bert_tokenizer), **TINY_BERT)
    src = tmp_path / "original"
    weights = write_original_checkpoint(src, bert_config, fmt=fmt)
    bert_tokenizer.save_pretrained(src)
    if fmt == "bin":
        with pytest.raises(ValueError, match="only pytorch_model.bin, a pickle: pass allow_pickle=True"):
            convert_sidr_checkpoint(src, tmp_path / "converted", encoder_config=src / "bert_config.json")
    model = convert_sidr_checkpoint(
        src, tmp_path / "converted", encoder_config=src / "bert_config.json", allow_pickle=fmt == "bin"
    )
    reloaded = SIDRModel.from_pretrained(tmp_path / "converted")
    assert reloaded.config.max_active_dims == 20 and reloaded.config.query_max_length == 32
    q_text, p_text = "who wrote hamlet", "hamlet is a play by william shakespeare"
    q_ids, p_ids = bert_tokenizer(q_text)["input_ids"], bert_tokenizer(p_text)["input_ids"]
    q0 = original_embed(weights, "q", q_ids, 999, 20, len(bert_tokenizer))
    p0 = original_embed(weights, "p", p_ids, 999, 20, len(bert_tokenizer))
    q1, p1 = dense_query(model, [q_text]), dense_document(model, [p_text])
    torch.testing.assert_close(q1[:, 999:], q0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p1[:, 999:], p0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(q1 @ p1.T, q0 @ p0.T, rtol=1e-5, atol=1e-5)


def test_converter_rejects_missing_keys_and_bad_shapes(tmp_path, bert_tokenizer):
    bert_config = BertConfig(vocab_size=len(bert_tokenizer), **TINY_BERT)
    src = tmp_path / "original"
    weights = write_original_checkpoint(src, bert_config)
    bert_tokenizer.save_pretrained(src)
    del weights["encoder_p.ln.bias"]
    save_file(weights, src / "model.safetensors")
    with pytest.raises(ValueError, match="lacks 1 weights.*passage_norm.bias"):
        convert_sidr_checkpoint(src, tmp_path / "out", encoder_config=src / "bert_config.json")
    with pytest.raises(ValueError, match="has shape .* pass the matching encoder_config"):
        convert_sidr_checkpoint(src, tmp_path / "out", encoder_config=BertConfig())  # hidden 768, not 32
    assert not (tmp_path / "out").exists()


def test_converter_requires_a_tokenizer(tmp_path, bert_tokenizer):
    src = tmp_path / "original"
    write_original_checkpoint(src, BertConfig(vocab_size=len(bert_tokenizer), **TINY_BERT), shared=True)
    with pytest.raises(ValueError, match="holds a tokenizer that loads here: pass tokenizer="):
        convert_sidr_checkpoint(src, tmp_path / "out", encoder_config=src / "bert_config.json")
    model = convert_sidr_checkpoint(
        src, tmp_path / "out", encoder_config=src / "bert_config.json", tokenizer=offline_model_path("splade-tiny")
    )
    assert model.config.shared_encoder and model.passage_encoder is None
    assert model.config.pad_token_id == model.tokenizer.pad_token_id  # the Trainer has nothing to align


def test_original_layout_loads_directly_like_the_converter(tmp_path, bert_tokenizer):
    bert_config = BertConfig(vocab_size=len(bert_tokenizer), **TINY_BERT)
    encoder_dir = tmp_path / "encoder"  # what the checkpoint's model_id names: the encoders' architecture
    bert_config.save_pretrained(encoder_dir)
    src = tmp_path / "original"
    weights = write_original_checkpoint(src, bert_config, model_id=str(encoder_dir))
    bert_tokenizer.save_pretrained(src)
    loaded = SIDRModel.from_pretrained(src)  # no encoder_config: taken from model_id, as the original code does
    converted = convert_sidr_checkpoint(src, tmp_path / "converted")
    assert (
        loaded.config.max_active_dims == 20 and loaded.config.activate_lexical and loaded.config.query_max_length == 32
    )
    q_ids = bert_tokenizer(QUERIES[0])["input_ids"]
    reference = original_embed(weights, "q", q_ids, 999, 20, len(bert_tokenizer))
    torch.testing.assert_close(dense_query(loaded, QUERIES[:1])[:, 999:], reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dense_query(loaded, QUERIES), dense_query(converted, QUERIES))
    torch.testing.assert_close(dense_document(loaded, PASSAGES), dense_document(converted, PASSAGES))
    assert loaded.encode_query(QUERIES).to_dense()[:, :999].abs().sum() == 0  # the shifted-out ids stay zero
