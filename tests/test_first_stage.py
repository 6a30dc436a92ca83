"""First stages of late-parametric search: the index's bm25s part (save, memory-mapped load, integrity and corpus
checks), bag-of-tokens / bm25 / hybrid candidates, fusion, fusion selection on dev questions, and training and
evaluating inside a hybrid pipeline."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from r3hf import BagOfTokensIndex, R3Config, R3Trainer, RAGEvaluator
from r3hf.evaluation import select_fusion
from r3hf.index.bm25 import BM25_CONFIG, BM25Retriever
from r3hf.retrieval import cached_passage_embeddings, first_stage_candidates, fuse, rerank, retrieve
from tests.test_index import CORPUS, QUERIES

MORE = CORPUS + [
    {"id": "g", "title": "Danube", "text": "The Danube river flows through Vienna and Budapest."},
    {"id": "h", "title": "Globe", "text": "The Globe Theatre in London staged plays by Shakespeare."},
    {"id": "i", "title": "Alps", "text": "The Alps are the highest mountain range in Europe."},
]


@pytest.fixture
def hybrid_index(bert_tokenizer):
    index = BagOfTokensIndex.build(MORE, bert_tokenizer, max_length=32)
    index.add_bm25()
    return index


def folder_bytes(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bm25_part_saves_loads_memory_mapped_and_searches_the_same(hybrid_index, tmp_path, monkeypatch):
    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    hybrid_index.save_pretrained(tmp_path / "idx")
    saved = json.loads((tmp_path / "idx" / "index_config.json").read_text())
    assert saved["bm25"] == {
        "folder": "bm25",
        "stopwords": "en",
        "lower": True,
        "stemmer": None,
        "fields": ["title", "text"],
    }
    part = json.loads((tmp_path / "idx" / "bm25" / BM25_CONFIG).read_text())
    assert part["num_passages"] == len(MORE) and part["corpus_fingerprint"] == saved["corpus_fingerprint"]
    assert {"params.index.json", "vocab.index.json", "data.csc.index.npy"} <= set(part["files"])
    assert not list((tmp_path / "idx" / "bm25").glob("*.pkl"))  # no pickle anywhere
    hashed = []
    with monkeypatch.context() as patch:  # checksums recorded by the save: the load hashes nothing
        patch.setattr("r3hf.file_cache.sha256_file", lambda path: hashed.append(path) or "not-used")
        loaded = BagOfTokensIndex.from_pretrained(tmp_path / "idx")
    assert hashed == []
    assert isinstance(loaded.bm25.bm25.scores["data"], np.memmap)
    for a, b in zip(loaded.bm25.search(QUERIES, 4), hybrid_index.bm25.search(QUERIES, 4)):
        assert torch.equal(a, b)
    # saving without a BM25 part removes the earlier one
    plain = BagOfTokensIndex.build(MORE, hybrid_index.tokenizer, max_length=32)
    plain.save_pretrained(tmp_path / "idx")
    assert not (tmp_path / "idx" / "bm25").exists() and BagOfTokensIndex.from_pretrained(tmp_path / "idx").bm25 is None


@pytest.mark.parametrize("stopwords, compiled_csc", [("en", False), (None, False), ("en", True)])
def test_the_bm25_part_built_a_batch_at_a_time_equals_bm25s_built_on_the_whole_corpus(
    bert_tokenizer, stopwords, compiled_csc, monkeypatch
):
    """Also with bm25s's compiled CSC builder, which large corpora use: the same arrays as its NumPy argsort one."""
    import bm25s

    from r3hf.index import bm25, postings
    from r3hf.index.bm25 import _tokenize_corpus

    if compiled_csc:
        if not postings.available():
            pytest.skip("numba is not installed")
        monkeypatch.setattr(bm25, "COMPILED_CSC_FROM", 0)

    passages = MORE + [{"id": "empty", "title": "", "text": "the of"}]  # no tokens once stopwords are gone
    index = BagOfTokensIndex.build(passages, bert_tokenizer, max_length=32)
    whole = bm25s.tokenize([f"{p['title']} {p['text']}".strip() for p in passages], stopwords=stopwords)
    batched = _tokenize_corpus(index.corpus, stopwords, batch_size=3)
    assert batched.vocab == whole.vocab and list(batched.ids) == whole.ids
    assert batched.ids[-1] == whole.ids[-1] and batched.ids[2] == whole.ids[2]
    reference = bm25s.BM25()
    reference.index(whole, show_progress=False)
    built = index.add_bm25(stopwords=stopwords).bm25
    assert (built._np_csc is not bm25s.BM25._np_csc) == compiled_csc  # which builder made the arrays
    assert built.vocab_dict == reference.vocab_dict
    for key in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(built.scores[key], reference.scores[key])


def test_a_damaged_bm25_file_is_refused_naming_it_and_nothing_on_disk_changes(hybrid_index, tmp_path, monkeypatch):
    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    hybrid_index.save_pretrained(tmp_path / "idx")
    data = tmp_path / "idx" / "bm25" / "data.csc.index.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    before = folder_bytes(tmp_path / "idx")
    with pytest.raises(ValueError, match=r"data\.csc\.index\.npy does not match its checksum.*rebuild the BM25 part"):
        BagOfTokensIndex.from_pretrained(tmp_path / "idx")
    assert folder_bytes(tmp_path / "idx") == before


def test_a_bm25_part_of_another_corpus_is_refused(hybrid_index, bert_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("R3HF_CACHE", str(tmp_path / "cache"))
    hybrid_index.save_pretrained(tmp_path / "idx")
    other = BagOfTokensIndex.build(list(reversed(MORE)), bert_tokenizer, max_length=32)  # same size, other rows
    other.add_bm25().save_pretrained(tmp_path / "other_bm25")
    with pytest.raises(ValueError, match=r"other_bm25 was built over another corpus.*index\.add_bm25\(\)"):
        BM25Retriever.from_pretrained(tmp_path / "other_bm25", hybrid_index)
    shutil.rmtree(tmp_path / "idx" / "bm25")
    shutil.copytree(tmp_path / "other_bm25", tmp_path / "idx" / "bm25")
    before = folder_bytes(tmp_path / "idx")
    with pytest.raises(ValueError, match="built over another corpus"):
        BagOfTokensIndex.from_pretrained(tmp_path / "idx")
    assert folder_bytes(tmp_path / "idx") == before


def test_other_tokenizer_settings_and_a_missing_bm25_part_are_refused(hybrid_index, bert_tokenizer, tmp_path):
    hybrid_index.save_pretrained(tmp_path / "idx")
    loaded = BagOfTokensIndex.from_pretrained(tmp_path / "idx")
    with pytest.raises(ValueError, match=r"r3hf_bm25\.json was built with stopwords='en', not None"):
        loaded.require_bm25({"stopwords": None})
    loaded.require_bm25({"stopwords": "en"})
    BagOfTokensIndex.build(MORE, bert_tokenizer, max_length=32).save_pretrained(tmp_path / "plain")
    plain = BagOfTokensIndex.from_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"The index saved in .*plain has no bm25s part.*index\.add_bm25\(\)"):
        first_stage_candidates(plain, QUERIES, torch.rand(3, plain.vocab_size), 3, "hybrid")


def test_unknown_first_stage_and_fusion_get_clear_errors(tiny_sidr, hybrid_index, tmp_path):
    with pytest.raises(ValueError, match=r"first_stage must be one of \('bag_of_tokens', 'bm25', 'hybrid'\)"):
        retrieve(tiny_sidr, QUERIES, hybrid_index, k=2, rerank_top_m=3, first_stage="dense")
    with pytest.raises(ValueError, match="use first_stage='bm25' or 'hybrid'"):
        retrieve(tiny_sidr, QUERIES, hybrid_index, k=2, rerank_top_m=3, fusion="rrf")
    with pytest.raises(ValueError, match="fusion must be one of"):
        RAGEvaluator(QUERIES, [["x"]] * 3, hybrid_index, first_stage="hybrid", fusion="max")
    embeds = tiny_sidr.encode_query(QUERIES, convert_to_sparse_tensor=False)
    rows, ranks, _ = first_stage_candidates(hybrid_index, QUERIES, embeds, 3, "hybrid")
    for fusion in ("rrf", "weighted", "score"):  # before, a fusion without bm25s's ranks silently ranked by E(q)·E(d)
        with pytest.raises(
            ValueError, match=rf"fusion='{fusion}' needs the candidates' bm25s ranks: pass bm25_ranks="
        ):
            rerank(tiny_sidr, embeds, rows, hybrid_index, 2, fusion=fusion)
    with pytest.raises(ValueError, match=r"fusion='score' needs the candidates' BM25 scores: pass bm25_scores="):
        rerank(tiny_sidr, embeds, rows, hybrid_index, 2, bm25_ranks=ranks, fusion="score")
    with pytest.raises(ValueError, match="first_stage must be one of"):
        R3Config(output_dir=str(tmp_path), first_stage="bm42", use_cpu=True, report_to="none")


def test_hybrid_candidates_are_the_deduplicated_union_of_both_lists(tiny_sidr, hybrid_index):
    embeds = tiny_sidr.encode_query(QUERIES, convert_to_sparse_tensor=False)
    m = 3
    bot = hybrid_index.search(embeds, k=m).rows.tolist()
    bm25, _ = hybrid_index.bm25.search(QUERIES, m)
    _, bm25_scores = hybrid_index.bm25.search(QUERIES, m)
    rows, ranks, scores = first_stage_candidates(hybrid_index, QUERIES, embeds, m, "hybrid")
    for row, rank, score, a, b, b_score in zip(
        rows.tolist(), ranks.tolist(), scores.tolist(), bot, bm25.tolist(), bm25_scores.tolist()
    ):
        union = list(dict.fromkeys(a + b))
        assert row[: len(union)] == union and all(r == -1 for r in row[len(union) :])
        assert [rank[row.index(r)] for r in b] == [1, 2, 3]  # bm25s ranks, 1-based
        assert [score[row.index(r)] for r in b] == b_score  # and bm25s's own scores
        assert all(rank[row.index(r)] == 0 and score[row.index(r)] == 0 for r in union if r not in b)
    bm25_only, bm25_ranks, only_scores = first_stage_candidates(hybrid_index, QUERIES, embeds, m, "bm25")
    assert torch.equal(bm25_only, bm25) and torch.equal(only_scores, bm25_scores)
    assert bm25_ranks.tolist() == [[1, 2, 3]] * len(QUERIES)
    # every candidate in the union: the hybrid pipeline ranks exactly like the bag-of-tokens one
    everything = len(MORE)
    a = retrieve(tiny_sidr, QUERIES, hybrid_index, k=4, rerank_top_m=everything, first_stage="hybrid")
    b = retrieve(tiny_sidr, QUERIES, hybrid_index, k=4, rerank_top_m=everything)
    assert torch.equal(a.rows, b.rows)
    with cached_passage_embeddings(tiny_sidr):  # the evaluation cache embeds once and ranks the same
        c = retrieve(tiny_sidr, QUERIES, hybrid_index, k=4, rerank_top_m=everything, first_stage="hybrid")
        assert len(tiny_sidr._r3hf_passage_cache) == everything
        torch.testing.assert_close(c.scores, a.scores)


def test_fusion_by_hand():
    dense = torch.tensor([[3.0, 1.0, 2.0, -torch.inf]])
    ranks = torch.tensor([[0, 1, 2, 0]])  # bm25s: candidate 1 first, candidate 2 second; 3 is padding
    rrf = fuse(dense, ranks, "rrf", 0.5)
    expected = [1 / 61, 1 / 63 + 1 / 61, 1 / 62 + 1 / 62]
    torch.testing.assert_close(rrf[0, :3], torch.tensor(expected))
    assert rrf[0, 3] == -torch.inf
    weighted = fuse(dense, ranks, "weighted", 0.25)
    # dense min-max scaled over the 3 real candidates: 1, 0, 0.5; bm25s (m + 1 - rank) / m with m = 2: 0, 1, 0.5
    torch.testing.assert_close(weighted[0, :3], torch.tensor([0.25, 0.75, 0.5]))
    assert torch.equal(fuse(dense, ranks, "none", 0.5), dense)
    # "score": the same dense part; bm25s's scores divided by the query's best, 0 outside its list: 0, 1, 0.25
    scores = torch.tensor([[0.0, 8.0, 2.0, 0.0]])
    by_score = fuse(dense, ranks, "score", 0.25, bm25_scores=scores)
    torch.testing.assert_close(by_score[0, :3], torch.tensor([0.25, 0.75, 0.3125]))
    assert by_score[0, 3] == -torch.inf
    with pytest.raises(ValueError, match="needs the candidates' BM25 scores"):
        fuse(dense, ranks, "score", 0.25)


def test_score_fusion_follows_the_size_of_bm25s_lead_where_rank_fusion_cannot(tiny_sidr, hybrid_index):
    """Two candidates with bm25s ranks 1 and 2 but near-equal scores: with the dense score favouring the second, the
    score fusion puts it first at a weight where the rank fusion keeps bm25s's order."""
    dense = torch.tensor([[0.0, 1.0]])
    ranks = torch.tensor([[1, 2]])
    close = torch.tensor([[10.0, 9.9]])
    assert fuse(dense, ranks, "weighted", 0.2).argmax().item() == 0
    assert fuse(dense, ranks, "score", 0.2, bm25_scores=close).argmax().item() == 1
    # through retrieve(): a score fusion at dense weight 0 ranks by bm25s's scores alone, in its order
    bm25_rows, _ = hybrid_index.bm25.search(QUERIES, 3)
    got = retrieve(
        tiny_sidr, QUERIES, hybrid_index, k=3, rerank_top_m=3, first_stage="bm25", fusion="score", fusion_weight=0.0
    )
    assert torch.equal(got.rows, bm25_rows)


def test_select_fusion_picks_the_best_dev_option(tiny_sidr, hybrid_index):
    answers = [["Shakespeare"], ["Everest"], ["Paris"]]
    choice = select_fusion(tiny_sidr, hybrid_index, QUERIES, answers, rerank_top_m=3, weights=(0.3, 0.7))
    assert set(choice["recall@1"]) == {"none", "rrf", "weighted:0.3", "weighted:0.7"}
    best = max(choice["recall@1"].values())
    name = "weighted:" + f"{choice['fusion_weight']:g}" if choice["fusion"] == "weighted" else choice["fusion"]
    assert choice["recall@1"][name] == best and choice["n"] == 3
    # the first option reaching the best value wins
    assert name == next(k for k, v in choice["recall@1"].items() if v == best)
    scored = select_fusion(
        tiny_sidr, hybrid_index, QUERIES, answers, rerank_top_m=3, weights=(0.3,), fusions=("score", "rrf")
    )
    assert list(scored["recall@1"]) == ["score:0.3", "rrf"]
    with pytest.raises(ValueError, match="fusions must name at least one of"):
        select_fusion(tiny_sidr, hybrid_index, QUERIES, answers, rerank_top_m=3, fusions=("max",))


def test_select_fusion_by_reader_picks_the_option_whose_top_passages_the_reader_answers_from(tiny_sidr, hybrid_index):
    """The reader, not answer containment, decides: it answers only from the passages one option ranks first, and
    that option wins; each (question, passage) is read once however many options rank it first."""
    from r3hf.evaluation import fusion_options, select_fusion_by_reader

    answers = [["Shakespeare"], ["Everest"], ["Paris"]]
    weights = (0.3, 0.7)
    evaluator = RAGEvaluator(QUERIES, answers, hybrid_index, recall_at=[1], rerank_top_m=3, first_stage="hybrid")
    tops = {}
    for name, fusion, weight in fusion_options(weights):
        evaluator.fusion, evaluator.fusion_weight = fusion, weight
        tops[name] = [r["retrieved_ids"][0] for r in evaluator.predict(tiny_sidr)]
    assert len({tuple(top) for top in tops.values()}) > 1  # the options disagree on some question's top passage
    target = max(tops, key=lambda name: len({(q, p) for q, p in enumerate(tops[name])} - set(enumerate(tops["none"]))))
    read = []

    class Reader:
        def generate(self, questions, passages, **kwargs):
            read.extend((q, ps[0]["id"]) for q, ps in zip(questions, passages))
            return [
                a[0] if ps[0]["id"] == tops[target][QUERIES.index(q)] else "no idea"
                for q, ps, a in zip(questions, passages, [answers[QUERIES.index(q)] for q in questions])
            ]

    evaluator = RAGEvaluator(
        QUERIES, answers, hybrid_index, reader=Reader(), recall_at=[1], rerank_top_m=3, first_stage="hybrid"
    )
    choice = select_fusion_by_reader(tiny_sidr, evaluator, weights=weights)
    assert set(choice["rag_accuracy@1"]) == set(tops) and choice["n"] == 3
    assert choice["rag_accuracy@1"][target] == 1.0
    for name, top in tops.items():
        assert choice["rag_accuracy@1"][name] == sum(p == t for p, t in zip(top, tops[target])) / 3
    best = [n for n, v in choice["rag_accuracy@1"].items() if v == 1.0]
    winner = max(best, key=lambda n: (choice["recall@1"][n], -best.index(n)))
    assert (choice["fusion"], choice["fusion_weight"]) == next(
        (f, w) for n, f, w in fusion_options(weights) if n == winner
    )
    assert (evaluator.fusion, evaluator.fusion_weight) == (choice["fusion"], choice["fusion_weight"])
    assert len(read) == len(set(read)) == len({(q, p) for top in tops.values() for q, p in enumerate(top)})
    with pytest.raises(ValueError, match="needs an evaluator with a reader"):
        select_fusion_by_reader(tiny_sidr, RAGEvaluator(QUERIES, answers, hybrid_index, first_stage="hybrid"))
    with pytest.raises(ValueError, match="first_stage='hybrid' or 'bm25'"):
        select_fusion_by_reader(tiny_sidr, RAGEvaluator(QUERIES, answers, hybrid_index, reader=Reader()))


def test_evaluator_passes_its_pipeline_to_the_retriever(tiny_sidr, hybrid_index):
    answers = [["Shakespeare"], ["Everest"], ["Paris"]]
    evaluator = RAGEvaluator(QUERIES, answers, hybrid_index, recall_at=[1, 3], rerank_top_m=3, first_stage="bm25")
    ids = [r["retrieved_ids"] for r in evaluator.predict(tiny_sidr)]
    bm25, _ = hybrid_index.bm25.search(QUERIES, 3)
    for row, allowed in zip(ids, bm25.tolist()):
        assert {hybrid_index.corpus[i]["id"] for i in allowed} >= set(row)  # only bm25s candidates, re-ranked


@pytest.mark.parametrize("first_stage", ["bm25", "hybrid"])
def test_the_trainer_retrieves_and_mines_inside_the_chosen_pipeline(tiny_sidr, hybrid_index, tmp_path, first_stage):
    import datasets

    questions = ["who wrote hamlet", "highest mountain on earth", "capital of france", "longest river in africa"]
    train = datasets.Dataset.from_dict(
        {"question": questions, "answers": [["Shakespeare"], ["Everest"], ["Paris"], ["Nile"]]}
    )
    scored: dict[str, set] = {}

    def reward(queries, passages, answers, **kwargs):
        for q, p in zip(queries, passages):
            scored.setdefault(q, set()).add(p["id"])
        return [float(any(a.lower() in p["text"].lower() for a in ans)) for p, ans in zip(passages, answers)]

    m = 3
    config = R3Config(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        warmup_epochs_offline=1,  # step 1 offline (mined negatives), step 2 on-policy
        first_stage=first_stage,
        fusion="rrf",
        rerank_top_m=m,
        retrieval_top_k=2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
    )
    trainer = R3Trainer(tiny_sidr, reward, config, train, index=hybrid_index)
    trainer.train()
    embeds = tiny_sidr.encode_query(questions, convert_to_sparse_tensor=False)
    assert {e["online"] for e in trainer.state.log_history if "online" in e} == {0.0, 1.0}
    # Each scored passage was a candidate of the chosen first stage (the weights moved since: compare with bm25s's
    # own list, which does not depend on them, for the bm25 stage).
    if first_stage == "bm25":
        bm25, _ = hybrid_index.bm25.search(questions, m)
        for q, allowed in zip(questions, bm25.tolist()):
            assert scored[q] <= {hybrid_index.corpus[i]["id"] for i in allowed}
    else:
        rows, _, _ = first_stage_candidates(hybrid_index, questions, embeds, m, "hybrid")
        assert all(len(scored[q]) <= 2 for q in questions) and rows.shape[1] >= m
    with pytest.raises(ValueError, match="has no bm25s part"):
        R3Trainer(tiny_sidr, reward, config, train, index=BagOfTokensIndex.build(MORE, hybrid_index.tokenizer))


def test_negative_first_stage_mines_offline_negatives_from_bm25s_alone(tiny_sidr, hybrid_index, tmp_path):
    """`negative_first_stage="bm25"`: with the bag-of-tokens pipeline on-policy, the offline step's mined negatives
    are bm25s's best candidates without a gold answer."""
    import datasets

    questions = ["who wrote hamlet", "highest mountain on earth", "capital of france", "longest river in africa"]
    answers = [["Shakespeare"], ["Everest"], ["Paris"], ["Nile"]]
    train = datasets.Dataset.from_dict({"question": questions, "answers": answers})

    def config(**kwargs) -> R3Config:
        return R3Config(output_dir=str(tmp_path), offline_only=True, use_cpu=True, report_to="none", **kwargs)

    trainer = R3Trainer(tiny_sidr, None, config(negative_first_stage="bm25"), train, index=hybrid_index)
    examples = [{"question": q, "answers": a} for q, a in zip(questions, answers)]
    embeds = tiny_sidr.encode_query(questions, convert_to_sparse_tensor=False)
    _, negatives = trainer._sample_offline(tiny_sidr, examples, embeds)
    bm25, _ = hybrid_index.bm25.search(questions, 8)
    for negative, candidates, ans in zip(negatives, bm25.tolist(), answers):
        texts = [hybrid_index.corpus[r]["text"] for r in candidates]
        wrong = [r for r, t in zip(candidates, texts) if not any(a.lower() in t.lower() for a in ans)]
        assert negative == (wrong[0] if wrong else None)
    assert config(negative_first_stage="bm25").needs_bm25 and not config().needs_bm25  # recipes/train.py adds one
    default = R3Trainer(tiny_sidr, None, config(), train, index=hybrid_index)
    assert default._sample_offline(tiny_sidr, examples, embeds)[1] != negatives  # the bag of tokens mines others
    with pytest.raises(ValueError, match="first_stage must be one of"):
        config(negative_first_stage="dense")
    with pytest.raises(ValueError, match="has no bm25s part"):
        plain = BagOfTokensIndex.build(MORE, hybrid_index.tokenizer)
        R3Trainer(tiny_sidr, None, config(negative_first_stage="bm25"), train, index=plain)


def test_bm25_scores_of_given_rows_are_bm25s_own(hybrid_index):
    bm25 = hybrid_index.bm25
    rows, scores = bm25.search(QUERIES, 4)
    for i, (row, score) in enumerate(zip(rows.tolist(), scores)):
        assert torch.allclose(bm25.score_rows(QUERIES[i], row)[0], score)
    everything = bm25.score_rows(QUERIES + ["the of and"], range(len(MORE)))  # stopwords only: no indexed term
    assert everything.shape == (len(QUERIES) + 1, len(MORE)) and not everything[-1].any()
    assert all(0 < hits < len(MORE) for hits in (everything[:-1] > 0).sum(1).tolist())  # no shared term: 0
    with pytest.raises(IndexError, match=r"Rows must lie in \[0, 9\)"):
        bm25.score_rows(QUERIES, [len(MORE)])


def test_the_trainer_fuses_bm25s_scores_into_the_loss(tiny_sidr, hybrid_index, tmp_path, monkeypatch):
    """`bm25_residual_weight`: the loss gets each step's query-passage BM25 scores, laid out as the passages are
    (positives, then hard negatives); a plain index is refused."""
    import datasets

    import r3hf.r3_trainer

    questions = ["who wrote hamlet", "highest mountain on earth", "capital of france", "longest river in africa"]
    train = datasets.Dataset.from_dict(
        {
            "question": questions,
            "answers": [["Shakespeare"], ["Everest"], ["Paris"], ["Nile"]],
            "positive_ids": [["a"], ["b"], ["c"], ["e"]],
        }
    )
    seen = []
    real = r3hf.r3_trainer.rcl_loss
    monkeypatch.setattr(r3hf.r3_trainer, "rcl_loss", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    sampled = []
    config = R3Config(
        output_dir=str(tmp_path),
        offline_only=True,
        negative_first_stage="bm25",
        bm25_residual_weight=2.0,
        per_device_train_batch_size=4,
        max_steps=1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
    )
    trainer = R3Trainer(tiny_sidr, None, config, train, index=hybrid_index)
    sample = trainer._sample_offline

    def recording(sidr, examples, embeds):
        sampled.append(([ex["question"] for ex in examples], *sample(sidr, examples, embeds)))
        return sampled[-1][1:]

    monkeypatch.setattr(trainer, "_sample_offline", recording)
    trainer.train()
    (asked, positives, negatives), kwargs = sampled[0], seen[0]
    assert all(p is not None and n is not None for p, n in zip(positives, negatives))
    assert kwargs["bm25_residual_weight"] == 2.0
    assert torch.equal(kwargs["bm25_scores"], hybrid_index.bm25.score_rows(asked, positives + negatives))
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="bm25_residual_weight must be >= 0 and finite"):
            R3Config(output_dir=str(tmp_path), bm25_residual_weight=bad)
    with pytest.raises(ValueError, match="has no bm25s part"):
        plain = BagOfTokensIndex.build(MORE, hybrid_index.tokenizer)
        R3Trainer(tiny_sidr, None, config, train, index=plain)


def test_load_index_picks_the_saved_class(hybrid_index, tiny_sidr, tmp_path):
    from r3hf import SparseEmbeddingIndex, load_index

    hybrid_index.save_pretrained(tmp_path / "bot")
    SparseEmbeddingIndex.build(MORE[:4], tiny_sidr, batch_size=4).save_pretrained(tmp_path / "para")
    assert type(load_index(tmp_path / "bot")) is BagOfTokensIndex and load_index(tmp_path / "bot").bm25 is not None
    assert type(load_index(tmp_path / "para")) is SparseEmbeddingIndex
    config = json.loads((tmp_path / "para" / "index_config.json").read_text())
    (tmp_path / "para" / "index_config.json").write_text(json.dumps({**config, "index_type": "colbert"}))
    with pytest.raises(ValueError, match="names index_type 'colbert'"):
        load_index(tmp_path / "para")
