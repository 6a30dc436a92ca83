"""Each paper recipe runs its whole stage sequence in 2 processes against a loopback Hub that serves tiny datasets with the real ones' schemas, configurations and splits."""

import json

import pytest

from tests.fake_hub import FakeHub
from tests.testing_utils import ROOT, paper_datasets

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("config", ["nq.yaml", "tqa.yaml", "hotpotqa.yaml", "pubhealth.yaml", "arc_c.yaml"])
def test_paper_recipe_runs_every_stage_in_two_processes_against_a_loopback_hub(config, tmp_path, bert_tokenizer):
    from tests.testing_utils import launch_two_cpu_processes, make_tiny_causal_lm, make_tiny_sidr

    make_tiny_sidr(bert_tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32).save_pretrained(
        tmp_path / "sidr"
    )
    make_tiny_causal_lm(bert_tokenizer).save_pretrained(tmp_path / "lm")
    bert_tokenizer.save_pretrained(tmp_path / "lm")
    rows = [f"{i}\tTown {i} lies on river {i % 3}, a long river.\tTown {i}" for i in range(16)]
    (tmp_path / "psgs_w100.tsv").write_text("id\ttext\ttitle\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    name = config.removesuffix(".yaml")
    with FakeHub() as hub:
        for repo_id, configs in paper_datasets().items():
            hub.add_dataset(repo_id, configs)
        env = hub.client_env(tmp_path / "hf_home")
        overrides = {
            "model_name_or_path": tmp_path / "sidr",
            "reward_llms": tmp_path / "lm",
            "corpus": tmp_path / "psgs_w100.tsv",  # the YAML's DPR URL, as a local file
            "output_dir": out,
            "index_output_dir": out / "index",
            "calibration_file": out / "calibration.jsonl",
            "calibration_samples": 4,
            "calibration_top_k": 2,
            "max_eval_samples": 4,
            "per_device_train_batch_size": 2,  # x 2 processes: 2 steps per epoch of 8 questions
            "max_steps": 4,
            "warmup_epochs_offline": 1,  # epoch 1 offline, epoch 2 on-policy
            "rerank_top_m": 6,
            "retrieval_top_k": 3,
            "bf16": "false",
            "use_cpu": "true",
            "logging_steps": 1,
            "push_to_hub": "true",
            "hub_model_id": f"tester/r3-{name}",
        }
        args = [f"--{k}={v}" for k, v in overrides.items()]
        launch_two_cpu_processes(
            "recipes/train.py", "--config", str(ROOT / "recipes/configs" / config), *args, env=env
        )
        state = json.loads((out / "trainer_state.json").read_text())
        stages = {e["online"] for e in state["log_history"] if "online" in e}
        assert state["global_step"] == 4 and stages == {0.0, 1.0}  # offline and on-policy epochs both ran
        assert (out / "index" / "index_config.json").exists()
        calibration = (out / "calibration.jsonl").read_text().splitlines()
        assert len(calibration) == 4 * 2 and not (out / "calibration.jsonl.parts").exists()
        eval_results = json.loads((out / "eval_results.json").read_text())
        assert {"eval_rag_accuracy@1", "eval_rag_accuracy@10"} <= set(eval_results)  # 1 and 10 passages in context
        if name in ("pubhealth", "arc_c"):  # closed-set: pools by the closed-set rule, accuracy without recall
            assert all(json.loads(line)["generation"] == "" for line in calibration)
            assert not any(key.startswith("eval_answer_recall") for key in eval_results)
        pushed = set(hub.repos[("model", f"tester/r3-{name}")]["files"])
        assert {"config.json", "model.safetensors", "README.md"} <= pushed
