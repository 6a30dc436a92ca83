import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from r3hf.assets import offline_model_path
from r3hf.evaluation import has_answer
from r3hf.rewards import AnswerProbabilityReward, Calibration, GenerationReward, Reader
from tests.testing_utils import make_tiny_causal_lm

QUERY = "who wrote hamlet"
PASSAGE = {"title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare around 1600."}


@pytest.fixture(scope="module")
def tiny_lm(bert_tokenizer):
    return make_tiny_causal_lm(
        bert_tokenizer, num_hidden_layers=2, max_position_embeddings=512, pad_token_id=bert_tokenizer.pad_token_id
    )


@pytest.fixture
def reward(tiny_lm, bert_tokenizer):
    bert_tokenizer.padding_side = "right"
    return AnswerProbabilityReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", batch_size=4)


def manual_probability(model, prompt_ids, answer_ids):
    """Product of next-token probabilities, one forward pass per answer token, no batching."""
    prob = 1.0
    with torch.no_grad():
        for t, token in enumerate(answer_ids):
            logits = model(input_ids=torch.tensor([prompt_ids + answer_ids[:t]])).logits[0, -1]
            prob *= logits.softmax(-1)[token].item()
    return prob


def test_score_is_the_product_of_token_probabilities(reward, tiny_lm, bert_tokenizer):
    assert not reward.use_chat_template and "### Paragraph:\n[1] Hamlet\n" in reward.build_prompt(QUERY, [PASSAGE])
    answer = "william shakespeare"
    prompt_ids = bert_tokenizer(reward.build_prompt(QUERY, [PASSAGE]))["input_ids"]
    answer_ids = bert_tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert len(answer_ids) >= 2
    expected = manual_probability(tiny_lm, prompt_ids, answer_ids)
    assert reward.score([QUERY], [PASSAGE], [[answer]])[0] == pytest.approx(expected, rel=1e-4)
    normalized = AnswerProbabilityReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", length_normalize=True)
    assert normalized.score([QUERY], [PASSAGE], [answer])[0] == pytest.approx(
        expected ** (1 / len(answer_ids)), rel=1e-4
    )


def test_batch_and_padding_invariance(reward, bert_tokenizer):
    """Scores agree to a relative 1e-4, not bitwise: other batch shapes and padding sides run other BLAS kernels
    (and, across machines, other instruction sets), which sum in other orders."""
    queries = [
        QUERY,
        "what is the capital of france",
        "when was the eiffel tower built in paris",
        "who",
        "why is the sky blue",
    ]
    passages = [
        PASSAGE,
        "Paris is the capital of France.",
        {"title": "", "text": "The tower was built in 1889."},
        "x",
        "Rayleigh scattering makes the sky look blue to observers on the ground.",
    ]
    answers = [["shakespeare"], ["paris"], ["1889"], ["nobody"], ["rayleigh scattering"]]
    batched = reward.score(queries, passages, answers)
    reward.cache.clear()
    reward.batch_size = 1
    bert_tokenizer.padding_side = "left"
    single = reward.score(queries, passages, answers)
    assert batched == pytest.approx(single, rel=1e-4)


def test_best_alias_is_kept(reward):
    a = reward.score([QUERY], [PASSAGE], [["shakespeare"]])[0]
    b = reward.score([QUERY], [PASSAGE], [["bacon"]])[0]
    assert reward.score([QUERY], [PASSAGE], [["shakespeare", "bacon"]])[0] == pytest.approx(max(a, b), rel=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_aliases_share_one_pass_and_score_as_alone(family, tiny_lm, bert_tokenizer):
    if family == "gpt2":
        config = GPT2Config(vocab_size=len(bert_tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=512)
        torch.manual_seed(0)
        lm = GPT2LMHeadModel(config).eval()
    else:
        lm = tiny_lm
    reward = AnswerProbabilityReward(lm, tokenizer=bert_tokenizer, device="cpu", batch_size=2)
    aliases = ["william shakespeare", "the bard of avon", "shakespeare", "william shakespeare"]
    prompt_ids = bert_tokenizer(reward.build_prompt(QUERY, [PASSAGE]))["input_ids"]
    alone = [
        manual_probability(lm, prompt_ids, bert_tokenizer(a, add_special_tokens=False)["input_ids"]) for a in aliases
    ]
    queries, passages = [QUERY, "who", QUERY], [PASSAGE, "x", PASSAGE]
    scores = reward.score(queries, passages, [aliases, ["nobody", "no one at all"], aliases[1:2]])
    assert scores[0] == pytest.approx(max(alone), rel=1e-4)
    assert scores[2] == pytest.approx(alone[1], rel=1e-4)


def test_truncation_cuts_the_passage_never_the_answer(tiny_lm, bert_tokenizer):
    reward = AnswerProbabilityReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", max_length=48)
    long_passage = {"title": "Long", "text": " ".join(["filler words here"] * 200) + " the answer is zanzibar"}
    answer_ids = bert_tokenizer("zanzibar", add_special_tokens=False)["input_ids"]
    prompt_ids = reward.reader.prompt_ids(QUERY, [long_passage], 48 - len(answer_ids))
    assert len(prompt_ids) + len(answer_ids) <= 48
    text = bert_tokenizer.decode(prompt_ids)
    assert "instruction : who wrote hamlet # # # response :" in text and "filler" in text
    expected = manual_probability(tiny_lm, prompt_ids, answer_ids)
    assert reward.score([QUERY], [long_passage], ["zanzibar"])[0] == pytest.approx(expected, rel=1e-4)


def test_cache_hits(reward, monkeypatch):
    first = reward([QUERY] * 2, [PASSAGE, "other"], [["shakespeare"]] * 2)
    monkeypatch.setattr(reward.reader, "log_probs", lambda *a: pytest.fail("scored a cached pair again"))
    assert reward([QUERY] * 2, [PASSAGE, "other"], [["shakespeare"]] * 2) == first
    assert reward.cache_hits == 2 and reward.cache_hit_rate == 0.5


def test_reward_cache_is_shared_across_processes_and_runs(reward, tmp_path, monkeypatch):
    from r3hf.rewards.score_store import RewardCache

    first = reward.cache = RewardCache(tmp_path / "cache", writer="rank0")
    score = reward.score([QUERY], [PASSAGE], ["shakespeare"])
    other = RewardCache(tmp_path / "cache", writer="rank1")  # another process, started later
    assert len(other) == 1
    reward.cache = other
    second = reward.score(["another question"], [PASSAGE], ["shakespeare"])  # appended to rank1's segment only
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"rank0.sqlite", "rank1.sqlite"}
    key = reward._cache_key("another question", PASSAGE, ["shakespeare"])
    assert first.get_many([key]) == {key: second[0]}  # the live rank0 store sees the segment added after it opened
    # A resumed run with one process reads both segments: nothing is scored again.
    monkeypatch.setattr(reward.reader, "log_probs", lambda *a: pytest.fail("scored a cached pair again"))
    reward.cache, reward.cache_hits, reward.cache_lookups = RewardCache(tmp_path / "cache", writer="rank0"), 0, 0
    assert reward.score([QUERY, "another question"], [PASSAGE] * 2, ["shakespeare"] * 2)[0] == score[0]
    assert reward.cache_hit_rate == 1.0
    # The key covers the LLM and the prompt: another template is another score.
    reward.prompt_template = "{paragraphs}\nQ: {question}\nA:"
    with pytest.raises(pytest.fail.Exception, match="scored a cached pair again"):
        reward.score([QUERY], [PASSAGE], ["shakespeare"])
    (tmp_path / "cache" / "rank2.sqlite").write_bytes(b"not a database")
    with pytest.raises(ValueError, match="rank2.sqlite is not a readable reward-cache segment .* delete it"):
        RewardCache(tmp_path / "cache")


def test_scores_are_keyed_on_the_readers_weights_not_its_path(tiny_lm, bert_tokenizer, tmp_path, monkeypatch):
    """A reader saved again at the same path with other weights (retrained in place, say) scores afresh in a shared
    store; the same weights loaded from another folder reuse the scores; another precision is other weights."""
    import copy

    from r3hf.rewards.score_store import RewardCache

    def reward_from(folder):
        return AnswerProbabilityReward(
            str(folder), tokenizer=bert_tokenizer, device="cpu", cache=RewardCache(tmp_path / "store")
        )

    tiny_lm.save_pretrained(tmp_path / "reader")
    first = reward_from(tmp_path / "reader")
    score = first.score([QUERY], [PASSAGE], ["shakespeare"])
    first.cache.flush()
    tiny_lm.save_pretrained(tmp_path / "copy")  # the same weights elsewhere: read back
    same = reward_from(tmp_path / "copy")
    assert same.reader.fingerprint == first.reader.fingerprint
    monkeypatch.setattr(same.reader, "log_probs", lambda *a: pytest.fail("scored a stored pair again"))
    assert same.score([QUERY], [PASSAGE], ["shakespeare"]) == score

    retrained = copy.deepcopy(tiny_lm)
    with torch.no_grad():
        next(retrained.parameters())[0, 0] += 1e-3
    retrained.save_pretrained(tmp_path / "reader")  # other weights at the first reader's path
    again = reward_from(tmp_path / "reader")
    assert again.reader.fingerprint != first.reader.fingerprint
    again.score([QUERY], [PASSAGE], ["shakespeare"])
    assert again.cache_hits == 0 and again.cache_lookups == 1

    halved = AnswerProbabilityReward(copy.deepcopy(tiny_lm).to(torch.bfloat16), tokenizer=bert_tokenizer, device="cpu")
    assert halved.reader.fingerprint not in {first.reader.fingerprint, again.reader.fingerprint}
    halved.model = retrained  # a new model object is fingerprinted again
    assert halved.reader.fingerprint == again.reader.fingerprint


def test_a_model_object_runs_in_the_given_dtype_and_otherwise_in_its_own(tiny_lm, bert_tokenizer):
    import copy

    model = copy.deepcopy(tiny_lm)
    assert Reader(model, tokenizer=bert_tokenizer, device="cpu").model.dtype == torch.float32
    halved = Reader(model, tokenizer=bert_tokenizer, device="cpu", dtype=torch.bfloat16)
    assert halved.model.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in halved.model.parameters())
    assert Reader(halved.model, tokenizer=bert_tokenizer, device="cpu").model.dtype == torch.bfloat16


def test_threshold_edges(reward):
    score = reward.score([QUERY], [PASSAGE], ["shakespeare"])[0]
    reward.threshold = score
    assert reward([QUERY], [PASSAGE], ["shakespeare"]) == [1.0]  # reaching the threshold counts
    reward.threshold = min(1.0, score * 1.0001)
    assert reward(queries=[QUERY], passages=[PASSAGE], answers=["shakespeare"]) == [0.0]
    reward.threshold = 0.0
    assert reward(queries=[QUERY], passages=[PASSAGE], answers=["shakespeare"]) == [1.0]
    with pytest.raises(ValueError, match="number or 'calibrated'"):
        AnswerProbabilityReward(reward.model, tokenizer=reward.tokenizer, threshold="auto")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        AnswerProbabilityReward(reward.model, tokenizer=reward.tokenizer, threshold=1.5)
    reward.threshold = "calibrated"
    with pytest.raises(ValueError, match="needs a calibration"):
        reward(queries=[QUERY], passages=[PASSAGE], answers=["shakespeare"])


def test_empty_answers_are_a_clear_error(reward):
    with pytest.raises(ValueError, match="no usable gold answer"):
        reward.score([QUERY], [PASSAGE], [[]])
    with pytest.raises(ValueError, match="no usable gold answer"):
        reward.score([QUERY], [PASSAGE], [[" "]])
    with pytest.raises(ValueError, match="differ in length"):
        reward.score([QUERY, QUERY], [PASSAGE], [["a"]])


def test_calibration_rule_on_hand_made_scores(tmp_path):
    records = [
        {"query": "q1", "passage_id": "a", "score": 0.9, "label": 1, "generation": ""},
        {"query": "q1", "passage_id": "b", "score": 0.4, "label": 1, "generation": ""},
        {"query": "q1", "passage_id": "c", "score": 0.6, "label": 0, "generation": ""},
        {"query": "q1", "passage_id": "d", "score": 0.1, "label": 0, "generation": ""},
        {"query": "q2", "passage_id": "e", "score": 0.8, "label": 1, "generation": ""},  # no negative: discarded
    ]
    cal = Calibration.from_records(records)
    assert cal.thresholds == {"q1": {"max_negative": 0.6, "min_positive": 0.4}}
    assert cal.label("q1", 0.61) == 1.0
    assert cal.label("q1", 0.39) == 0.0
    assert cal.label("q1", 0.5) is None and cal.label("q1", 0.6) is None and cal.label("q1", 0.4) is None
    assert cal.label("q2", 0.99) is None and cal.label("unknown", 0.5) is None
    assert cal.positives("q1") == ["a", "b"]
    cal.save(tmp_path / "cal.jsonl")
    assert Calibration.load(tmp_path / "cal.jsonl").thresholds == cal.thresholds


def test_answered_within_k_counts_questions_with_a_correct_answer_among_their_first_k_passages():
    rows = {"q1": [0, 0, 1], "q2": [1, 0, 0], "q3": [0, 0, 0], "q4": [0, 1, 1]}  # labels in the retriever's order
    cal = Calibration.from_records(
        [
            {"query": q, "passage_id": f"{q}-{i}", "score": 0.5, "label": y, "generation": ""}
            for q, labels in rows.items()
            for i, y in enumerate(labels)
        ]
    )
    assert [cal.answered_within(k) for k in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 0.75]
    with pytest.raises(ValueError, match="at least 1"):
        cal.answered_within(0)
    with pytest.raises(ValueError, match="no records"):
        Calibration.from_records([]).answered_within(1)


def test_global_threshold_maximises_f1_against_generation_labels():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.2, 0.1]
    labels = [1, 0, 1, 1, 0, 0, 1]
    cal = Calibration.from_records(
        [
            {"query": f"q{i}", "passage_id": "", "score": s, "label": y, "generation": ""}
            for i, (s, y) in enumerate(zip(scores, labels))
        ]
    )
    # t=0.6 keeps 3 of 4 positives with 1 false positive: F1 = 6/8, the best (labelling all positive: 8/11).
    assert cal.global_threshold() == 0.6
    no_positive = Calibration.from_records(
        [{"query": "q", "passage_id": "", "score": 0.5, "label": 0, "generation": ""}]
    )
    with pytest.raises(ValueError, match="No record has a correct generation"):
        no_positive.global_threshold()


def test_calibrate_uses_real_generation_labels(reward, monkeypatch, tmp_path):
    passages = [[{"id": "p1", "title": "", "text": "shakespeare wrote it"}, {"id": "p2", "title": "", "text": "nope"}]]
    monkeypatch.setattr(
        reward.reader, "generate", lambda q, ps, max_new_tokens=20: ["It was Shakespeare.", "I do not know."]
    )
    cal = reward.calibrate([QUERY], [["Shakespeare"]], passages, save_path=tmp_path / "cal.jsonl")
    assert [r["label"] for r in cal.records] == [1, 0]
    scores = [r["score"] for r in cal.records]
    assert cal.thresholds[QUERY] == {"min_positive": scores[0], "max_negative": scores[1]}
    assert reward.calibration is cal and (tmp_path / "cal.jsonl").exists()
    reward.threshold = "calibrated"
    expected = cal.label(QUERY, scores[0])
    assert reward([QUERY], [passages[0][0]], [["Shakespeare"]]) == [expected]


def test_calibrate_in_parts_reads_back_only_labels_of_the_same_questions_and_settings(tmp_path):
    """An existing calibration file is loaded only when its records label exactly these questions and its recorded
    settings are these; otherwise the error names the file and the fix, and the file is left as it was."""
    import datasets

    from r3hf.rewards import calibrate_in_parts

    train = datasets.Dataset.from_list([{"question": f"q{i}", "answers": ["a"]} for i in range(4)])
    asked = []

    def label(rows, candidates):
        asked.extend(rows["question"])
        return [
            {"query": q, "passage_id": p["id"], "score": 0.5, "label": 1, "generation": ""}
            for q, ps in zip(rows["question"], candidates)
            for p in ps
        ]

    def candidates(questions):
        return [[{"id": "p0"}, {"id": "p1"}] for _ in questions]

    path = tmp_path / "cal.jsonl"
    settings = {"reward_llm": "lm", "calibration_top_k": 2, "pipeline": {"first_stage": "bm25", "weights": (1, 2)}}
    calibration = calibrate_in_parts(label, candidates, train, path, 3, 2, settings=settings)
    assert len(calibration.records) == 6 and asked == ["q0", "q1", "q2"]
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(written) == {"cal.jsonl", "cal.jsonl.settings.json"}
    again = calibrate_in_parts(label, candidates, train, path, 3, 2, settings=dict(settings))
    assert asked == ["q0", "q1", "q2"] and again.records["query"] == calibration.records["query"]  # read back
    with pytest.raises(ValueError, match=r"cal.jsonl was labelled with other settings \(reward_llm: 'lm' there, "):
        calibrate_in_parts(label, candidates, train, path, 3, 2, settings={**settings, "reward_llm": "other"})
    with pytest.raises(ValueError, match=r"cal.jsonl holds the labels of other questions \(0 of its 3 .* lacks 1"):
        calibrate_in_parts(label, candidates, train, path, 4, 2, settings=settings)
    with pytest.raises(ValueError, match="set calibration_file to another path"):
        calibrate_in_parts(label, candidates, train.select([3, 2, 1]), path, 3, 2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == written and len(asked) == 3
    # A crashed calibration's parts, begun with other settings, are not resumed under these.
    parts = tmp_path / "other.jsonl.parts"
    parts.mkdir()
    (parts / "settings.json").write_text('{"reward_llm": "other"}')
    with pytest.raises(ValueError, match="other.jsonl.parts was labelled with other settings .* delete that folder"):
        calibrate_in_parts(label, candidates, train, tmp_path / "other.jsonl", 3, 2, settings=settings)
    assert len(asked) == 3


def test_calibration_shows_the_scoring_progress_and_a_training_steps_scores_do_not(tiny_lm, bert_tokenizer, capsys):
    reward = AnswerProbabilityReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", batch_size=1)
    passages = [[{"id": f"p{i}", "title": "", "text": f"passage {i} on shakespeare"} for i in range(5)]]
    reward.reader.generate = lambda q, ps, max_new_tokens=None: ["Shakespeare"] * len(q)
    reward.label_by_generation([QUERY], [["Shakespeare"]], passages)
    assert "Scoring: 100%" in capsys.readouterr().err  # 5 batches: minutes on a CPU for a real calibration
    reward.score([QUERY] * 5, [f"other passage {i}" for i in range(5)], [["Shakespeare"]] * 5)
    assert "Scoring" not in capsys.readouterr().err


def test_generation_length_is_the_readers_unless_a_call_sets_it(reward, monkeypatch):
    lengths = []
    real = reward.model.generate

    def spy(**kwargs):
        lengths.append(kwargs["max_new_tokens"])
        return real(**kwargs)

    monkeypatch.setattr(reward.model, "generate", spy)
    assert reward.max_new_tokens == 100  # the paper's setting for free-form answers
    reward.max_new_tokens = 4
    reward.generate([QUERY], [[PASSAGE]])
    reward.generate([QUERY], [[PASSAGE]], max_new_tokens=2)
    reward.label_by_generation([QUERY], [["shakespeare"]], [[{"id": "p", "text": PASSAGE}]])
    assert lengths == [4, 2, 4]
    for bad in (0, reward.max_length):
        with pytest.raises(ValueError, match=r"max_new_tokens must be at least 1 and below max_length \(1024\)"):
            reward.generate([QUERY], [[PASSAGE]], max_new_tokens=bad)


def test_generate_is_greedy_and_batch_invariant(reward):
    """Exact equality of the generated text holds while each greedy step's best token leads the next by more than
    the float error that another batch shape brings (about 1e-6 here); the seeded tiny model's margins are far
    larger. A real LLM in float32 can flip near-ties: the demo keeps one batch size, so its runs repeat on one
    machine."""
    queries, passages = [QUERY, "a much longer question about the history of the city of paris"], [[PASSAGE], ["x"]]
    batched = reward.generate(queries, passages, max_new_tokens=5)
    reward.batch_size = 1
    assert reward.generate(queries, passages, max_new_tokens=5) == batched


def test_generation_has_its_own_batch_size(tiny_lm, bert_tokenizer, monkeypatch):
    reward = AnswerProbabilityReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", batch_size=2)
    assert reward.generation_batch_size == 2  # unset, it follows batch_size
    reward.batch_size = 3
    assert reward.generation_batch_size == 3
    queries, passages = [QUERY, "who", "what", "when", "where"], [[PASSAGE], ["x"], ["y z"], ["w"], ["v"]]
    answers = [["shakespeare"]] * 5
    shapes = []
    forward = type(tiny_lm).forward

    def record(self, input_ids=None, **kwargs):
        shapes.append(input_ids.shape[0])
        return forward(self, input_ids=input_ids, **kwargs)

    reward.generation_batch_size = 5
    monkeypatch.setattr(type(tiny_lm), "forward", record)
    texts = reward.generate(queries, passages, max_new_tokens=2)
    assert shapes == [5, 5]  # one batch of 5, two greedy steps
    shapes.clear()
    reward.score(queries, [p[0] for p in passages], answers)
    assert shapes == [3, 2]  # scoring keeps batch_size
    reward.generation_batch_size = 1
    assert reward.generate(queries, passages, max_new_tokens=2) == texts
    with pytest.raises(ValueError, match="generation_batch_size must be at least 1"):
        reward.generation_batch_size = 0
    with pytest.raises(ValueError, match="generation_batch_size must be at least 1"):
        AnswerProbabilityReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", generation_batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        reward.batch_size = 0
    assert reward.batch_size == 3


def test_closed_set_choices(reward):
    probs = reward.score([QUERY] * 2, [PASSAGE] * 2, [["true"], ["false"]])
    gold = 0 if probs[0] > probs[1] else 1
    assert reward([QUERY], [PASSAGE], [gold], choices=[["true", "false"]]) == [1.0]
    assert reward([QUERY], [PASSAGE], [1 - gold], choices=[["true", "false"]]) == [0.0]


def test_peft_adapter_folder(tiny_lm, bert_tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    tiny_lm.save_pretrained(tmp_path / "base")
    bert_tokenizer.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(
        LlamaForCausalLM.from_pretrained(tmp_path / "base"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    bert_tokenizer.save_pretrained(tmp_path / "adapter")
    from_adapter = AnswerProbabilityReward(str(tmp_path / "adapter"), device="cpu")
    base = AnswerProbabilityReward(str(tmp_path / "base"), device="cpu")
    # LoRA's B matrices start at zero: the adapter does not change the scores yet.
    assert from_adapter.score([QUERY], [PASSAGE], ["shakespeare"]) == pytest.approx(
        base.score([QUERY], [PASSAGE], ["shakespeare"]), rel=1e-5
    )


@pytest.mark.slow
def test_real_instruct_llm_prefers_the_passage_with_the_answer():
    reward = AnswerProbabilityReward(offline_model_path("smollm2-135m-instruct"), device="cpu")
    assert reward.use_chat_template
    good, bad = reward.score([QUERY] * 2, [PASSAGE, "The Nile is a river in Africa."], [["William Shakespeare"]] * 2)
    assert good > 2 * bad and 0 < good <= 1 and not math.isnan(bad)


def test_out_of_memory_shrinks_the_batch_instead_of_failing(reward, monkeypatch):
    queries, passages = [QUERY] * 4, [PASSAGE] * 4
    answers = [["Shakespeare"], ["William Shakespeare"], ["1600"], ["tragedy"]]
    expected = reward.score(queries, passages, answers)
    expected_text = reward.generate(queries, [[p] for p in passages], max_new_tokens=3)
    reward.cache = {}
    forward = type(reward.model).forward

    def small_batches_only(self, input_ids=None, **kwargs):
        if input_ids.shape[0] > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(reward.model), "forward", small_batches_only)
    assert reward.batch_size == 4
    assert reward.score(queries, passages, answers) == pytest.approx(expected)
    assert reward.batch_size <= 2
    reward.batch_size = 4
    assert reward.generate(queries, [[p] for p in passages], max_new_tokens=3) == expected_text
    assert reward.batch_size <= 2


def test_closed_set_margins_agree_with_a_direct_computation(reward, bert_tokenizer):
    """Every choice scored in one shared forward pass gives the log-probabilities of scoring each choice alone."""
    passages = [PASSAGE, {"title": "Nile", "text": "The Nile is a river in Africa."}]
    choices, gold = [["true", "false"], ["a", "b", "c", "d"]], [0, 2]
    margins = reward.choice_margins([QUERY, QUERY], passages, choices, gold)
    for passage, options, g, margin in zip(passages, choices, gold, margins):
        prompt = bert_tokenizer(reward.build_prompt(QUERY, [passage]))["input_ids"]
        log_probs = [
            math.log(
                manual_probability(reward.model, prompt, bert_tokenizer(o, add_special_tokens=False)["input_ids"])
            )
            for o in options
        ]
        direct = log_probs[g] - max(v for j, v in enumerate(log_probs) if j != g)
        assert margin == pytest.approx(direct, abs=1e-4)
    assert reward.score_choices([QUERY, QUERY], passages, choices, gold) == [float(m > 0) for m in margins]


def test_closed_set_margins_do_not_depend_on_the_batch(reward):
    passages = [{"title": "", "text": f"passage number {i} " * (i + 1)} for i in range(7)]
    choices = [["true", "false"]] * 7
    gold = [i % 2 for i in range(7)]
    reward.cache = None  # every call computes
    together = reward.choice_margins([QUERY] * 7, passages, choices, gold)
    reward.batch_size = 1
    alone = [reward.choice_margins([QUERY], [p], [c], [g])[0] for p, c, g in zip(passages, choices, gold)]
    assert together == pytest.approx(alone, rel=1e-4, abs=1e-5)  # BLAS kernels change with the batch shape


def test_closed_set_input_errors_name_the_problem(reward):
    with pytest.raises(ValueError, match="at least two distinct"):
        reward.choice_margins([QUERY], [PASSAGE], [["true"]], [0])
    with pytest.raises(ValueError, match="gold choice index 2"):
        reward.choice_margins([QUERY], [PASSAGE], [["true", "false"]], [2])


def test_generation_reward_is_the_readers_own_answer_checked_like_rag_accuracy(tiny_lm, bert_tokenizer, monkeypatch):
    reward = GenerationReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", max_new_tokens=4)
    assert reward.__name__ == "generation"
    # The reward of a pair is has_answer of the reader's generation for it, whatever the generation is.
    real = reward([QUERY, "another question"], [PASSAGE, "other"], [["shakespeare"], ["nothing"]])
    generations = reward.generate([QUERY, "another question"], [[PASSAGE], ["other"]])
    assert real == [float(has_answer(g, a)) for g, a in zip(generations, [["shakespeare"], ["nothing"]])]
    said = {"who wrote hamlet": "It was William Shakespeare.", "who painted it": "Nobody knows"}
    calls = []

    def fake_generate(queries, passages, **kwargs):
        calls.append(list(queries))
        return [said[q] for q in queries]

    monkeypatch.setattr(reward.reader, "generate", fake_generate)
    queries, answers = ["who wrote hamlet", "who painted it"], [["William Shakespeare"], ["Leonardo"]]
    assert reward(queries=queries, passages=[PASSAGE, PASSAGE], answers=answers) == [1.0, 0.0]
    # Cached: a pair that comes back is not generated again; a new generation length is a new answer.
    assert reward(queries=queries, passages=[PASSAGE, PASSAGE], answers=answers) == [1.0, 0.0]
    assert calls == [queries]
    reward.max_new_tokens = 8
    reward(queries=queries[:1], passages=[PASSAGE], answers=answers[:1])
    assert calls == [queries, queries[:1]]
    # Its keys are its own: the answer-probability score of the same pair is still computed, and is a probability.
    assert 0.0 < reward.score(queries[:1], [PASSAGE], answers[:1])[0] < 1.0
    with pytest.raises(ValueError, match="differ in length: 2, 1, 2"):
        reward(queries=queries, passages=[PASSAGE], answers=answers)
    with pytest.raises(ValueError, match="queries=, passages= and answers="):
        reward(queries=queries)


def test_generation_reward_keeps_the_closed_set_rule(reward, tiny_lm, bert_tokenizer):
    exact = GenerationReward(tiny_lm, tokenizer=bert_tokenizer, device="cpu", batch_size=4)
    choices = [["true", "false"]] * 2
    assert exact([QUERY] * 2, [PASSAGE] * 2, [0, 1], choices=choices) == reward(
        [QUERY] * 2, [PASSAGE] * 2, [0, 1], choices=choices
    )
