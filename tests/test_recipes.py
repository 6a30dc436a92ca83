import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from r3hf import R3Config, SIDRModel
from r3hf.cli import main as cli_main
from r3hf.scripts.train import R3ScriptArguments, make_parser
from tests.conftest import make_tiny_sidr

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_yaml_parses(config, tmp_path):
    # use_cpu: the paper configs ask for bf16 on GPUs, which TrainingArguments checks for at parse time.
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path), "--use_cpu", "true"]
    )
    assert isinstance(script_args, R3ScriptArguments) and isinstance(training_args, R3Config)
    raw = yaml.safe_load(config.read_text())
    assert training_args.learning_rate == raw["learning_rate"]
    if config.name != "demo_cpu.yaml":  # the paper's 4-GPU settings
        assert training_args.per_device_train_batch_size * 4 == 128 and training_args.learning_rate == 2e-5
        assert training_args.num_train_epochs == 80 and training_args.warmup_epochs_offline == 40


def test_cli_flags_override_the_yaml(tmp_path):
    config = ROOT / "recipes" / "configs" / "demo_cpu.yaml"
    _, training_args, _ = make_parser().parse_args_and_config(
        ["--config", str(config), "--output_dir", str(tmp_path), "--retrieval_top_k", "3", "--max_steps", "7"]
    )
    assert training_args.retrieval_top_k == 3 and training_args.max_steps == 7


@pytest.fixture
def tiny_setup(tmp_path, bert_tokenizer):
    """A tiny SIDR retriever, a tiny random causal LM and small QA/corpus files on disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    make_tiny_sidr(bert_tokenizer, topk=32, query_max_length=16, passage_max_length=32).save_pretrained(
        tmp_path / "sidr"
    )
    torch.manual_seed(0)
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(bert_tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
        )
    )
    lm.save_pretrained(tmp_path / "lm")
    bert_tokenizer.save_pretrained(tmp_path / "lm")
    corpus = [{"id": f"p{i}", "title": f"T{i}", "text": f"passage number {i} about river {i % 3}"} for i in range(12)]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus))
    qa = [{"question": f"which river {i}", "answers": [f"river {i % 3}"], "positive_ids": [f"p{i}"]} for i in range(8)]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(q) for q in qa))
    return tmp_path


def test_tiny_end_to_end_train_recipe(tiny_setup):
    from r3hf.scripts.train import main

    t = tiny_setup
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        [
            "--dataset_name",
            str(t / "qa.jsonl"),
            "--corpus",
            str(t / "corpus.jsonl"),
            "--retriever",
            str(t / "sidr"),
            "--reward_llm",
            str(t / "lm"),
            "--reward_threshold",
            "0.0",
            "--eval_dataset_name",
            str(t / "qa.jsonl"),
            "--output_dir",
            str(t / "out"),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--retrieval_top_m",
            "6",
            "--retrieval_top_k",
            "3",
            "--use_cpu",
            "true",
            "--save_strategy",
            "no",
            "--index_output_dir",
            str(t / "index"),
            "--calibrate",
            "true",
            "--calibration_samples",
            "4",
            "--calibration_top_k",
            "2",
            "--eval_recall_at",
            "1",
            "3",
        ]
    )
    trainer = main(script_args, training_args, model_args)
    assert trainer.state.global_step == 2
    model = SIDRModel.from_pretrained(t / "out")
    assert model.config.topk == 32
    card = (t / "out" / "README.md").read_text()
    assert "library_name: r3hf" in card and "eval_answer_recall@1" in card and "retrieval_top_k | 3" in card
    assert (t / "out" / "calibration.jsonl").exists() and (t / "index" / "index_config.json").exists()
    results = json.loads((t / "out" / "r3_results.json").read_text())
    assert {"eval_answer_recall@1", "eval_rag_accuracy"} <= set(results["initial"]) <= set(results["final"])
    assert any("loss/qd" in e for e in results["log_history"])


def test_cli_index_build_search_and_convert(tiny_setup, capsys):
    t = tiny_setup
    cli_main(
        [
            "index",
            "build",
            "--corpus",
            str(t / "corpus.jsonl"),
            "--retriever",
            str(t / "sidr"),
            "--output",
            str(t / "idx"),
        ]
    )
    assert (t / "idx" / "index.safetensors").exists()
    cli_main(["search", "which river 1", "--retriever", str(t / "sidr"), "--index", str(t / "idx"), "-k", "2"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["query"] == "which river 1" and len(line["results"]) == 2 and "text" in line["results"][0]
    with pytest.raises(SystemExit):
        cli_main(["convert-sidr"])  # missing arguments: argparse's usage error


def test_cli_evaluate_compares_with_bm25s(tiny_setup, tmp_path):
    t = tiny_setup
    out = tmp_path / "metrics.json"
    cli_main(
        [
            "evaluate",
            "--retrievers",
            str(t / "sidr"),
            "bm25s",
            "--dataset",
            str(t / "qa.jsonl"),
            "--corpus",
            str(t / "corpus.jsonl"),
            "--ks",
            "1",
            "3",
            "--output",
            str(out),
        ]
    )
    metrics = json.loads(out.read_text())
    assert set(metrics) == {str(t / "sidr"), "bm25s"}
    assert metrics["bm25s"]["answer_recall@3"] >= metrics["bm25s"]["answer_recall@1"]


def test_wheel_ships_the_card_templates_and_metric(tmp_path):
    """A `pip install r3hf` (not editable) must still find `model_cards/` and the `evaluate` metric module."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(ROOT),
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    with zipfile.ZipFile(next(tmp_path.glob("r3hf-*.whl"))) as wheel:
        names = set(wheel.namelist())
    assert {"r3hf/model_cards/retriever_card.md", "r3hf/model_cards/index_card.md"} <= names
    assert "r3hf/metrics/rag_accuracy/rag_accuracy.py" in names
