import json
from pathlib import Path

import pytest
import torch

from r3hf import R3Config, R3Trainer
from tests.synthetic import hidden_subset_reward, make_environment, top1_reward_share
from tests.testing_utils import make_tiny_causal_lm, make_tiny_sidr

ROOT = Path(__file__).resolve().parents[1]


def make_trainer(tmp_path, tokenizer, **overrides):
    _, index, train, hidden = make_environment(tokenizer)
    model = make_tiny_sidr(tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        num_train_epochs=6,
        rerank_top_m=40,
        retrieval_top_k=10,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    settings.update(overrides)
    trainer = R3Trainer(
        model=model,
        args=R3Config(**settings),
        reward_funcs=hidden_subset_reward(hidden),
        train_dataset=train,
        index=index,
    )
    return trainer, hidden


def test_training_raises_the_share_of_rewarded_passages(tmp_path, bert_tokenizer):
    trainer, hidden = make_trainer(tmp_path, bert_tokenizer)
    questions = trainer.train_dataset["question"]
    before = top1_reward_share(trainer.model, trainer.index, questions, hidden)
    params_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = top1_reward_share(trainer.model, trainer.index, questions, hidden)
    logs = trainer.state.log_history
    assert any("train_loss" in e for e in logs)
    step_logs = [e for e in logs if "loss/qd" in e]
    for key in (
        "reward",
        "frac_online_positive",
        "frac_reward_ignored",
        "profiling/retrieval_s",
        "profiling/reward_s",
        "loss/qT",
        "loss/Td",
        "sparsity/query_active_dims",
    ):
        assert key in step_logs[0], key
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, params_before[n])]
    assert any(n.startswith("query_encoder") for n in changed) and any(
        n.startswith("passage_encoder") for n in changed
    )
    assert after >= before + 0.3, (before, after)


def test_batches_without_any_positive_are_skipped(tmp_path, bert_tokenizer):
    trainer, _ = make_trainer(tmp_path, bert_tokenizer, max_steps=2, positive_fallback="skip")
    trainer.reward_funcs = [lambda queries, passages, answers, **kw: [0.0] * len(queries)]
    params_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [e for e in trainer.state.log_history if "frac_skipped" in e]
    assert logs and all(e["frac_skipped"] == 1.0 and e["frac_online_positive"] == 0.0 for e in logs)
    assert all(torch.equal(p, params_before[n]) for n, p in trainer.model.named_parameters())


def test_gold_fallback_fills_missing_positives(tmp_path, bert_tokenizer):
    trainer, _ = make_trainer(tmp_path, bert_tokenizer, max_steps=1, positive_fallback="gold")
    trainer.reward_funcs = [lambda queries, passages, answers, **kw: [0.0] * len(queries)]
    trainer.train()
    log = next(e for e in trainer.state.log_history if "frac_skipped" in e)
    assert log["frac_skipped"] == 0.0 and log["frac_online_positive"] == 0.0


def test_resume_from_checkpoint_gives_the_same_next_step_loss(tmp_path, bert_tokenizer):
    def losses(trainer):
        return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}

    full, _ = make_trainer(tmp_path / "a", bert_tokenizer, max_steps=4, save_strategy="steps", save_steps=2)
    full.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    assert (checkpoint / "r3_state_rank0.json").exists() and (checkpoint / "README.md").exists()
    assert (checkpoint / "training_args.json").exists() and not (checkpoint / "training_args.bin").exists()
    assert (tmp_path / "a" / "out" / "README.md").exists()
    resumed, _ = make_trainer(tmp_path / "a", bert_tokenizer, max_steps=4, save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    assert losses(resumed)[3] == pytest.approx(losses(full)[3], rel=1e-5)
    assert losses(resumed)[4] == pytest.approx(losses(full)[4], rel=1e-5)


def test_config_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="retrieval_top_k <= rerank_top_m"):
        R3Config(output_dir=str(tmp_path), rerank_top_m=5, retrieval_top_k=10)
    with pytest.raises(ValueError, match="positive_fallback"):
        R3Config(output_dir=str(tmp_path), positive_fallback="random")


def test_lora_trains_only_adapters(tmp_path, bert_tokenizer):
    from peft import LoraConfig

    _, index, train, hidden = make_environment(bert_tokenizer)
    model = make_tiny_sidr(bert_tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    args = R3Config(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=1e-2,
        rerank_top_m=20,
        retrieval_top_k=5,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = R3Trainer(
        model=model,
        args=args,
        reward_funcs=hidden_subset_reward(hidden),
        train_dataset=train,
        index=index,
        peft_config=LoraConfig(r=4, target_modules=["query", "value"]),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)


def test_evaluate_reports_answer_recall(tmp_path, bert_tokenizer):
    trainer, _ = make_trainer(tmp_path, bert_tokenizer, max_steps=1, eval_recall_at=[1, 5])
    ds = trainer.train_dataset.select(range(4)).map(lambda ex: {"answers": ex["question"].split()[:1]})
    metrics = trainer.evaluate(ds)
    assert set(metrics) == {"eval_answer_recall@1", "eval_answer_recall@5"}
    assert 0.0 <= metrics["eval_answer_recall@1"] <= metrics["eval_answer_recall@5"] <= 1.0
    logged = trainer.state.log_history[-1]  # the evaluation's own log, no training-step metrics mixed in
    assert {k: v for k, v in logged.items() if k not in ("step", "epoch")} == metrics
    records = [json.loads(line) for line in (tmp_path / "out" / "eval" / "predictions.jsonl").open()]
    assert len(records) == 4 and all(len(r["retrieved_ids"]) == 5 for r in records)
    with pytest.raises(ValueError, match="evaluation dataset is empty"):
        trainer.evaluate(ds.select([]))


def test_rewards_may_be_a_loaded_causal_lm_or_its_path(tmp_path, bert_tokenizer):
    from transformers import AutoModelForCausalLM

    from r3hf import AnswerProbabilityReward

    make_tiny_causal_lm(bert_tokenizer).save_pretrained(tmp_path / "lm")
    bert_tokenizer.save_pretrained(tmp_path / "lm")
    _, index, train, hidden = make_environment(bert_tokenizer)
    model = make_tiny_sidr(bert_tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    args = R3Config(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=1, report_to="none")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    # GRPOTrainer's order: model, reward_funcs, args, train_dataset
    trainer = R3Trainer(model, [loaded, str(tmp_path / "lm"), hidden_subset_reward(hidden)], args, train, index=index)
    assert [type(f) for f in trainer.reward_funcs[:2]] == [AnswerProbabilityReward] * 2
    assert trainer.reward_funcs[0].model is loaded
    assert trainer.reward_func_names == ["answer_probability", "answer_probability", "hidden_subset"]
    with pytest.raises(TypeError, match="A reward must be a callable"):
        R3Trainer(model, 3, args, train, index=index)


def test_a_reward_reused_for_a_second_stage_moves_to_that_stages_store(tmp_path, bert_tokenizer):
    from r3hf.rewards.score_store import RewardCache

    _, index, train, hidden = make_environment(bert_tokenizer)
    model = make_tiny_sidr(bert_tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    reward = hidden_subset_reward(hidden)
    reward.cache = {b"k" * 16: 0.5}

    def attach(folder: str):
        args = R3Config(output_dir=str(tmp_path / folder), use_cpu=True, max_steps=1, report_to="none")
        R3Trainer(model, reward, args, train, index=index)
        return reward.cache

    stage1 = attach("stage1")
    assert stage1.folder == tmp_path / "stage1" / "reward_cache" and stage1.get_many([b"k" * 16]) == {b"k" * 16: 0.5}
    assert attach("stage1") is stage1
    stage2 = attach("stage2")
    assert stage2.folder == tmp_path / "stage2" / "reward_cache" and stage2 is not stage1
    reward.cache = mine = RewardCache(tmp_path / "mine")
    assert attach("stage3") is mine


def test_flops_regulariser_is_logged_and_lowers_activations(tmp_path, bert_tokenizer):
    from r3hf.losses import flops

    x = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]])
    assert flops(x).item() == pytest.approx(2.0**2 + 0.0 + 1.0**2)
    mass = {}
    for weight in (0.0, 1.0):
        trainer, _ = make_trainer(tmp_path / str(weight), bert_tokenizer, max_steps=3, flops_weight=weight)
        trainer.train()
        questions = trainer.train_dataset["question"][:8]
        mass[weight] = trainer.model.encode_query(questions, convert_to_sparse_tensor=False).sum(1).mean().item()
    logs = [e for e in trainer.state.log_history if "loss/flops" in e]
    assert len(logs) == 3 and "sparsity/passage_active_dims" in logs[0]
    assert mass[1.0] < mass[0.0]  # the same run without the regulariser keeps more activation mass
    with pytest.raises(ValueError, match="flops_weight"):
        R3Config(output_dir=str(tmp_path), flops_weight=-1.0)


def test_offline_pools_are_arrays_grouped_by_question_and_label(bert_tokenizer):
    from r3hf.r3_trainer import OfflinePools
    from r3hf.rewards import Calibration

    _, index, _, _ = make_environment(bert_tokenizer)  # passages p0..p39, row i = "p{i}"
    records = [
        {"query": "q1", "passage_id": "p7", "score": 0.9, "label": 1, "generation": ""},
        {"query": "q2", "passage_id": "p3", "score": 0.1, "label": 0, "generation": ""},
        {"query": "q1", "passage_id": "p2", "score": 0.2, "label": 0, "generation": ""},
        {"query": "q1", "passage_id": "gone", "score": 0.8, "label": 1, "generation": ""},  # not in the index
        {"query": "q1", "passage_id": "p5", "score": 0.7, "label": 1, "generation": ""},
    ]
    calibration = Calibration.from_records(records)
    assert calibration.thresholds == {"q1": {"max_negative": 0.2, "min_positive": 0.7}}  # q2 has no positive
    assert calibration.positives("q1") == ["p7", "gone", "p5"]
    pools = OfflinePools(calibration, index)
    assert pools.rows("q1", 1) == [7, 5] and pools.rows("q1", 0) == [2]  # record order, unknown passage dropped
    assert pools.rows("q2", 0) == [3] and pools.rows("q2", 1) == [] and pools.rows("unseen", 1) == []
    assert OfflinePools(Calibration.from_records([records[3]]), index).rows("q1", 1) == []


def test_an_offline_only_run_needs_no_reward_and_calls_none(tmp_path, bert_tokenizer):
    _, index, train, _ = make_environment(bert_tokenizer)
    model = make_tiny_sidr(bert_tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32)
    common = dict(per_device_train_batch_size=8, max_steps=2, logging_steps=1, save_strategy="no", use_cpu=True)
    with pytest.raises(ValueError, match="offline_only"):
        R3Trainer(model, None, R3Config(output_dir=str(tmp_path / "a"), **common), train, index=index)
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'index'"):
        R3Trainer(model, None, R3Config(output_dir=str(tmp_path / "a"), **common), train)
    config = R3Config(output_dir=str(tmp_path / "b"), offline_only=True, positive_fallback="gold", **common)
    trainer = R3Trainer(model, None, config, train, index=index)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [e for e in trainer.state.log_history if "online" in e]
    assert len(logs) == 2 and all(e["online"] == 0.0 and "reward" not in e for e in logs)
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
