import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from r3hf import R3Config, SIDRModel
from r3hf.cli import main as cli_main
from r3hf.data import load_qa_dataset
from r3hf.scripts.train import R3ScriptArguments, make_parser
from tests.testing_utils import make_tiny_causal_lm, make_tiny_sidr

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_recipe_yaml_parses(config, tmp_path):
    # use_cpu: the paper configs ask for bf16 on GPUs, which TrainingArguments checks for at parse time.
    script_args, training_args, model_args = make_parser().parse_args_and_config(
        ["--config", str(config), "--output-dir", str(tmp_path), "--use-cpu", "true"]
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
        ["--config", str(config), "--output-dir", str(tmp_path), "--retrieval-top-k", "3", "--max-steps", "7"]
    )
    assert training_args.retrieval_top_k == 3 and training_args.max_steps == 7


@pytest.fixture
def tiny_setup(tmp_path, bert_tokenizer):
    """A tiny SIDR retriever, a tiny random causal LM and small QA/corpus files on disk."""
    make_tiny_sidr(bert_tokenizer, max_active_dims=32, query_max_length=16, passage_max_length=32).save_pretrained(
        tmp_path / "sidr"
    )
    lm = make_tiny_causal_lm(bert_tokenizer)
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
            "--dataset-name",
            str(t / "qa.jsonl"),
            "--corpus",
            str(t / "corpus.jsonl"),
            "--model-name-or-path",
            str(t / "sidr"),
            "--reward-llms",
            str(t / "lm"),
            "--reward-threshold",
            "0.5",  # a random LM is never this sure: positives come from the pools or gold, negatives on-policy
            "--eval-dataset-name",
            str(t / "qa.jsonl"),
            "--output-dir",
            str(t / "out"),
            "--max-steps",
            "2",
            "--per-device-train-batch-size",
            "4",
            "--rerank-top-m",
            "6",
            "--retrieval-top-k",
            "3",
            "--use-cpu",
            "true",
            "--save-strategy",
            "no",
            "--index-output-dir",
            str(t / "index"),
            "--calibrate",
            "true",
            "--calibration-samples",
            "4",
            "--calibration-top-k",
            "2",
            "--eval-recall-at",
            "1",
            "3",
            "--bm25-residual-weight",  # bm25s's score in the loss: the index gets a bm25s part for it
            "1.0",
        ]
    )
    trainer = main(script_args, training_args, model_args)
    assert trainer.state.global_step == 2
    assert (t / "index" / "bm25" / "r3hf_bm25.json").exists()
    model = SIDRModel.from_pretrained(t / "out")
    assert model.config.max_active_dims == 32
    card = (t / "out" / "README.md").read_text()
    assert "library_name: r3hf" in card and "eval_answer_recall@1" in card and "retrieval_top_k | 3" in card
    assert "bm25_residual_weight | 1.0" in card
    assert (t / "out" / "calibration_0.jsonl").exists() and (t / "index" / "index_config.json").exists()
    initial = json.loads((t / "out" / "initial_results.json").read_text())
    final = json.loads((t / "out" / "eval_results.json").read_text())
    assert {"initial_answer_recall@1", "initial_rag_accuracy@1"} <= set(initial)
    assert {"eval_answer_recall@1", "eval_rag_accuracy@1"} <= set(final)
    state = json.loads((t / "out" / "trainer_state.json").read_text())
    assert any("loss/qd" in e for e in state["log_history"])
    assert (t / "out" / "training_args.json").exists()
    assert not [f for f in (t / "out").iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl")]


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
    search = ["search", "which river 1", "--retriever", str(t / "sidr"), "-k", "2", "--first-stage", "hybrid"]
    with pytest.raises(ValueError, match="has no bm25s part"):
        cli_main([*search, "--index", str(t / "idx")])
    build = ["index", "build", "--corpus", str(t / "corpus.jsonl"), "--retriever", str(t / "sidr"), "--bm25"]
    cli_main([*build, "--output", str(t / "idx_bm25")])
    assert (t / "idx_bm25" / "bm25" / "r3hf_bm25.json").exists()
    cli_main([*search, "--index", str(t / "idx_bm25"), "--fusion", "rrf"])
    hybrid = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert hybrid["query"] == "which river 1" and len(hybrid["results"]) == 2


def test_cli_evaluate_compares_with_bm25s(tiny_setup, tmp_path):
    t = tiny_setup
    out = tmp_path / "eval"
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
            "--first-stage",
            "hybrid",
            "--output-dir",
            str(out),
        ]
    )
    report = json.loads((out / "results.json").read_text())
    metrics = report["metrics"]
    assert set(metrics) == {str(t / "sidr"), "bm25s"}
    assert metrics["bm25s"]["answer_recall@3"] >= metrics["bm25s"]["answer_recall@1"]
    pair = report["paired_differences"][f"{t / 'sidr'} - bm25s"]["recall@1"]
    expected = metrics[str(t / "sidr")]["answer_recall@1"] - metrics["bm25s"]["answer_recall@1"]
    assert pair["difference"] == pytest.approx(expected) and pair["low"] <= pair["difference"] <= pair["high"]
    lines = (out / "predictions_1.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[0])["retriever"] == "bm25s"


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


def test_resume_flag_picks_the_last_checkpoint(tmp_path):
    from r3hf.scripts.train import resolve_checkpoint

    assert resolve_checkpoint(None, str(tmp_path)) is None
    assert resolve_checkpoint("true", str(tmp_path / "missing")) is None  # nothing to resume: start afresh
    for step in (5, 20, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert resolve_checkpoint("true", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resolve_checkpoint("last", str(tmp_path)) == str(tmp_path / "checkpoint-20")
    assert resolve_checkpoint(str(tmp_path / "checkpoint-5"), str(tmp_path)) == str(tmp_path / "checkpoint-5")


def test_script_arguments_follow_trl():
    from trl import ScriptArguments

    script_args, _, model_args = make_parser().parse_args_and_config(
        [
            "--dataset-name",
            "qa.jsonl",
            "--model-name-or-path",
            "all-minilm-l6-v2",
            "--reward-llms",
            "a",
            "b",
            "--output-dir",
            "out",
        ]
    )
    assert isinstance(script_args, ScriptArguments) and script_args.reward_llms == ["a", "b"]
    assert model_args.model_name_or_path == "all-minilm-l6-v2"


def test_dpr_passage_files_load_as_corpora(tmp_path, monkeypatch):
    import gzip
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import datasets

    from r3hf.data import load_table

    text = 'id\ttext\ttitle\n1\t"Aaron is a ""prophet"" in the Bible."\tAaron\n2\tNA\tNull\n10\tnull\tNA\n'
    (tmp_path / "psgs_w100.tsv").write_text(text)
    with gzip.open(tmp_path / "psgs_w100.tsv.gz", "wt") as f:
        f.write(text)
    # What the paper recipes name: DPR's own file by URL (here served by a loopback HTTP server), or a local copy.
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # the conftest keeps the real Hub unreachable
    url = f"http://127.0.0.1:{server.server_address[1]}/psgs_w100.tsv.gz"
    try:
        sources = [str(tmp_path / "psgs_w100.tsv"), str(tmp_path / "psgs_w100.tsv.gz"), url]
        corpora = [load_table(source) for source in sources]
    finally:
        server.shutdown()
        server.server_close()
    for corpus in corpora:
        assert corpus.to_list() == [
            {"id": "1", "text": 'Aaron is a "prophet" in the Bible.', "title": "Aaron"},
            {"id": "2", "text": "NA", "title": "Null"},
            {"id": "10", "text": "null", "title": "NA"},
        ]


def test_dry_run_checks_the_configuration_and_counts_the_stages(tiny_setup):
    from r3hf.scripts.train import main

    t = tiny_setup
    common = [
        "--dataset-name",
        str(t / "qa.jsonl"),
        "--model-name-or-path",
        str(t / "sidr"),
        "--reward-llms",
        str(t / "lm"),
        "--output-dir",
        str(t / "out"),
        "--use-cpu",
        "true",
        "--dry-run",
        "true",
    ]
    plan = main(
        *make_parser().parse_args_and_config(
            [
                *common,
                "--corpus",
                str(t / "corpus.jsonl"),
                "--per-device-train-batch-size",
                "3",
                "--num-train-epochs",
                "4",
                "--warmup-epochs-offline",
                "1",
                "--retrieval-top-k",
                "2",
                "--calibrate",
                "true",
                "--calibration-samples",
                "5",
                "--calibration-top-k",
                "3",
            ]
        )
    )
    assert plan["train_questions"] == 8 and plan["index_passages"] == 12 and plan["effective_batch_size"] == 3
    assert plan["steps_per_epoch"] == 3 and plan["total_steps"] == 12 and plan["offline_steps"] == 3
    assert plan["calibration_pairs"] == 15 and plan["reward_calls_without_cache"] == 9 * 3 * 2
    assert plan["reward_calls_with_cache_at_least"] == 8 * 2
    assert not (t / "out" / "index").exists() and not list((t / "out").glob("checkpoint-*"))  # nothing ran
    assert plan["problems"] == [] and plan["not_checked_here"] == []
    (t / "bad.jsonl").write_text(json.dumps({"q": "no question column"}))
    bad = main(
        *make_parser().parse_args_and_config(
            [*common, "--corpus", str(t / "corpus.jsonl"), "--dataset-name", str(t / "bad.jsonl")]
        )
    )
    # reported in one line, and the other checks still ran
    assert len(bad["problems"]) == 1 and "needs 'question' and 'answers' columns" in bad["problems"][0]
    assert bad["index_passages"] == 12 and bad["train_questions"] is None
    with pytest.raises(ValueError, match="Pass --corpus"):
        main(*make_parser().parse_args_and_config(common))


def load_demo():
    """`recipes/demo.py` as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", ROOT / "recipes" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def tiny_demo_data(data: Path) -> Path:
    """The vendored data files, cut to a few rows each, so that every stage of the demo stays fast."""
    import gzip

    data.mkdir()
    for name, rows in {"corpus": 300, "nq_train": 8, "squad_train": 8, "nq_dev": 4, "squad_dev": 4}.items():
        lines = gzip.open(ROOT / "data" / f"{name}.jsonl.gz", "rt").read().splitlines()[:rows]
        with gzip.open(data / f"{name}.jsonl.gz", "wt") as f:
            f.write("\n".join(lines) + "\n")
    for name in ("nq_test", "squad_test"):
        shutil.copy(data / f"{name.replace('test', 'dev')}.jsonl.gz", data / f"{name}.jsonl.gz")
    return data


def tiny_demo_flags(models: Path, data: Path) -> list[str]:
    """Demo flags for the tiny models and data, with every count cut to a few."""
    args = ["--retriever", str(models / "sidr"), "--data", str(data), "--reader", str(models / "lm")]
    args += ["--eval-samples", "3", "--dev-samples", "2", "--calibration-samples", "2"]
    args += ["--calibration-top-k", "2", "--offline-steps", "1", "--online-steps", "1", "--batch-size", "2"]
    args += ["--rerank-top-m", "4", "--retrieval-top-k", "2", "--max-new-tokens", "3", "--reader-batch-size", "4"]
    return args + ["--generation-batch-size", "3"]


@pytest.mark.slow
def test_demo_gpu_preset_runs_its_code_path_on_cpu_with_tiny_counts(tiny_setup, tmp_path):
    """`recipes/demo.py --preset gpu` with tiny models and counts: both pipelines, both on-policy stages, stage 1 and
    full parametric evaluation, the fusion chosen on dev questions; a second run reuses every trained stage."""
    demo = load_demo()

    t = tiny_setup
    data = tiny_demo_data(tmp_path / "data")
    args = ["--preset", "gpu", "--output-dir", str(tmp_path / "demo"), *tiny_demo_flags(t, data)]
    parsed = demo.parse_args(args)
    assert parsed.full_parametric and parsed.evaluate_stage1 and parsed.offline_epochs is None
    assert (parsed.reader_batch_size, parsed.generation_batch_size) == (4, 3)
    summary = demo.main(args)
    assert demo.parse_args(["--preset", "gpu"]).offline_epochs == 2.0  # the preset's own schedule
    long = demo.parse_args(["--preset", "cpu-long", "--eval-samples", "100"])  # a flag overrides its preset only
    assert (long.eval_samples, long.online_steps, long.dev_samples) == (100, 8, 100)
    for name in ("nq_test", "squad_test"):
        labels = set(summary["results"][name]["metrics"])
        for model in ("initial", "stage1", "r3", "r3_hybrid"):
            assert {f"{model} @ {p}" for p in ("bag_of_tokens", "hybrid", "full_parametric")} <= labels
        pairs = summary["results"][name]["paired_differences"]
        assert {"r3_hybrid @ hybrid - bm25s", "r3_hybrid @ hybrid - initial @ hybrid"} <= set(pairs)
        assert {"r3 @ bag_of_tokens - initial @ bag_of_tokens", "r3_hybrid @ hybrid - r3 @ hybrid"} <= set(pairs)
    assert summary["hybrid_pipeline"]["first_stage"] == "hybrid" and summary["fusion_selection"]["n"] == 4
    assert set(summary["evaluation_fusion"]) == {"initial", "stage1", "r3", "r3_hybrid"}  # each its own, on dev
    assert (tmp_path / "demo" / "demo.png").exists() and (
        tmp_path / "demo" / "r3_hybrid" / "model.safetensors"
    ).exists()
    labels_written = (tmp_path / "demo" / "calibration.jsonl").stat().st_mtime_ns
    again = demo.main(args)  # every stage loaded, not retrained: the same training logs
    assert again["training"] == summary["training"]
    assert (tmp_path / "demo" / "calibration.jsonl").stat().st_mtime_ns == labels_written  # read back, not relabelled
    assert again["calibration"] == summary["calibration"]
    # Only the on-policy stages train again, with that reward and without fallback positives.
    exact = demo.main(args + ["--reward", "generation", "--positive-fallback", "skip"])
    assert exact["training"]["stage 1 (offline)"] == summary["training"]["stage 1 (offline)"]
    online = [stage for stage in exact["training"] if stage.startswith("stage 2")]
    assert len(online) == 2 and exact["training"] != summary["training"]
    assert all(any("profiling/reward/generation_s" in h for h in exact["training"][stage]) for stage in online)
    skipped = [h for stage in online for h in exact["training"][stage] if "frac_online_positive" in h]
    assert skipped and all(h["frac_skipped"] >= 1 - h["frac_online_positive"] - 1e-6 for h in skipped)
    stage = {
        n: json.loads((tmp_path / "demo" / n / "demo_stage.json").read_text())["record"] for n in ("stage1", "r3")
    }
    fallbacks = {n: record["settings"]["positive_fallback"] for n, record in stage.items()}
    assert fallbacks == {"stage1": "offline", "r3": "skip"}
    # Calibration pools from the hybrid pipeline: the initial retriever's top-k there, and stage 1 trains again.
    # With bm25s's score fused into the loss, at its weight in the initial retriever's dev-chosen fusion: stage 1
    # and the hybrid on-policy stage train with it, the paper's pipeline's on-policy stage without.
    pooled = demo.main(args + ["--calibration-first-stage", "hybrid", "--bm25-residual-weight", "fusion"])
    record = json.loads((tmp_path / "demo" / "stage1" / "demo_stage.json").read_text())["record"]
    assert record["calibration"] == {"samples": 2, "top_k": 2, "first_stage": "hybrid"}
    fusion = pooled["fusion_selection"]
    weight = {"weighted": (1 - fusion["fusion_weight"]) / fusion["fusion_weight"], "rrf": 1.0}
    expected = weight.get(fusion["fusion"], 0.0)
    assert pooled["args"]["bm25_residual_weight"] == pytest.approx(expected)
    assert expected > 0  # this run's fusion uses bm25s (reciprocal rank), so the checks below are not vacuous
    residual = {
        n: json.loads((tmp_path / "demo" / n / "demo_stage.json").read_text())["record"]["settings"].get(
            "bm25_residual_weight", 0.0
        )
        for n in ("stage1", "r3", "r3_hybrid")
    }
    assert residual == pytest.approx({"stage1": expected, "r3": 0.0, "r3_hybrid": expected})
    assert record["stage1_questions"] == "all" and record["train_questions"] == 16
    assert record["train_sets"] == ["nq", "squad"]
    initial = demo.demo_retriever(str(t / "sidr"))
    index = demo.demo_index(initial, data, bm25=True)
    questions = demo.training_questions(data)["question"][:2]

    def top2(**pipeline) -> list[str]:
        rows = initial.retrieve(questions, index, k=2, rerank_top_m=4, **pipeline).rows
        return [str(i) for i in index.corpus.select(rows.flatten().tolist())["id"]]

    rows = [json.loads(line) for line in (tmp_path / "demo" / "calibration.jsonl").open()]
    assert [r["passage_id"] for r in rows] == top2(**pooled["hybrid_pipeline"]) != top2()  # the pipelines differ
    within = pooled["calibration"]["answered_within"]
    assert set(within) == {1, 2} and within[1] == sum(r["label"] for r in rows[::2]) / 2
    assert within[2] == sum(max(a["label"], b["label"]) for a, b in zip(rows[::2], rows[1::2])) / 2
    assert pooled["calibration"]["pairs"] == 4 and pooled["calibration"]["first_stage"] == "hybrid"


def test_demo_calibration_labels_only_the_pairs_no_earlier_run_labelled(tmp_path):
    """A demo run with more calibrated questions reads back the labels an earlier run wrote to its folder and
    generates only the added questions'; the same run again generates nothing and leaves the file as it was; other
    reader weights under the same name, or another generation length, label everything again."""
    import argparse
    from types import SimpleNamespace

    import datasets

    demo = load_demo()
    train = datasets.Dataset.from_dict({"question": [f"q{i}" for i in range(4)], "answers": [["a"]] * 4})
    calls = []

    class Retriever:
        swapped = False

        def retrieve(self, questions, index, k, rerank_top_m):
            rows = [[int(q[1:]), int(q[1:]) + 10][:k] for q in questions]
            return SimpleNamespace(rows=[row[::-1] for row in rows] if self.swapped else rows)

    class Index:
        def get_passages(self, rows):
            return [[{"id": f"p{r}"} for r in row] for row in rows]

    class Reward:
        def __init__(self, weights: str):
            self.threshold, self.labelled, self.passages = 0.5, [], []
            self.reader = SimpleNamespace(fingerprint=weights)

        def label_by_generation(self, queries, answers, candidates):
            self.labelled.append(list(queries))
            self.passages.append([p["id"] for ps in candidates for p in ps])
            calls.append(queries)
            step = len(calls)  # which call wrote a record
            return [
                {
                    "query": q,
                    "passage_id": p["id"],
                    "score": 0.1 * step,
                    "label": int(p["id"] == "p0"),
                    "generation": "",
                }
                for q, ps in zip(queries, candidates)
                for p in ps
            ]

    def calibrate(
        samples: int, max_new_tokens: int = 8, retriever: Retriever | None = None, top_k: int = 2, weights: str = "w"
    ) -> tuple[Reward, dict]:
        reward = Reward(weights)
        args = argparse.Namespace(
            calibration_samples=samples,
            calibration_top_k=top_k,
            calibration_first_stage="bag_of_tokens",
            rerank_top_m=4,
            reader="reader",
            max_new_tokens=max_new_tokens,
        )
        return reward, demo.calibrate(retriever or Retriever(), Index(), train, reward, args, tmp_path, {})[1]

    path = tmp_path / "calibration.jsonl"
    reward, summary = calibrate(2)
    assert reward.labelled == [["q0", "q1"]] and summary["pairs"] == 4 and summary["positives"] == 1
    reward, summary = calibrate(3)
    assert reward.labelled == [["q2"]]  # q0 and q1 read back
    records = reward.calibration.records
    assert list(zip(records["query"], records["passage_id"])) == [
        ("q0", "p0"), ("q0", "p10"), ("q1", "p1"), ("q1", "p11"), ("q2", "p2"), ("q2", "p12")
    ]  # fmt: skip
    assert records["score"] == pytest.approx([0.1] * 4 + [0.2] * 2)  # as each run labelled them
    assert [json.loads(line)["query"] for line in path.open()] == records["query"]
    assert summary["questions"] == 3 and summary["positives"] == 1 and summary["answered_within"][1] == 1 / 3
    written = path.stat().st_mtime_ns
    reward, again = calibrate(3)
    assert reward.labelled == [] and again == summary and path.stat().st_mtime_ns == written
    reward, _ = calibrate(2)  # fewer questions: read back, and the file holds this run's labels
    assert reward.labelled == [] and len(reward.calibration.records) == 4 == sum(1 for _ in path.open())
    swapped = Retriever()
    swapped.swapped = True
    reward, _ = calibrate(2, retriever=swapped)  # the same pairs in another order: read back, written in this one
    assert reward.labelled == [] and [json.loads(line)["passage_id"] for line in path.open()] == [
        "p10",
        "p0",
        "p11",
        "p1",
    ]
    reward, _ = calibrate(3, weights="retrained")  # the same reader name with other weights labels everything again
    assert reward.labelled == [["q0", "q1", "q2"]]
    reward, _ = calibrate(3, max_new_tokens=4, weights="retrained")
    assert reward.labelled == [["q0", "q1", "q2"]]
    path.unlink()
    reward, _ = calibrate(2, max_new_tokens=4, top_k=1, weights="retrained")
    assert reward.passages == [["p0", "p1"]]
    reward, _ = calibrate(
        2, max_new_tokens=4, weights="retrained"
    )  # a deeper top-k: only the passages no run labelled are generated
    assert reward.labelled == [["q0", "q1"]] and reward.passages == [["p10", "p11"]]
    assert [json.loads(line)["passage_id"] for line in path.open()] == ["p0", "p10", "p1", "p11"]


def test_stage1_trains_on_all_the_calibrated_or_the_pooled_questions():
    """`--stage1-questions`: every training question, the calibrated ones, or (the paper) those whose candidates the
    reader answered both rightly and wrongly from; the on-policy stage then sees every training question."""
    import datasets

    from r3hf import Calibration

    demo = load_demo()
    train = datasets.Dataset.from_dict({"question": [f"q{i}" for i in range(6)]})
    subset = train.select(range(3))
    calibration = Calibration.from_records(
        [
            {"query": q, "passage_id": p, "score": 0.1, "label": label, "generation": ""}
            for q, p, label in [("q0", "a", 1), ("q0", "b", 0), ("q1", "a", 0), ("q1", "b", 0), ("q2", "a", 1)]
        ]
    )
    chosen = {w: demo.stage1_questions(train, subset, calibration, w)["question"] for w in demo.STAGE1_QUESTIONS}
    assert chosen == {"all": train["question"], "calibrated": ["q0", "q1", "q2"], "pooled": ["q0"]}
    assert demo.unseen_questions(train, subset, 4, "pooled")["question"] == train["question"]
    assert demo.unseen_questions(train, subset, 4)["question"] == ["q0", "q1", "q2", "q4", "q5"]
    unanswered = Calibration.from_records([{"query": "q1", "passage_id": "a", "score": 0.1, "label": 0}])
    with pytest.raises(ValueError, match="--stage1-questions pooled: no calibrated question"):
        demo.stage1_questions(train, subset, unanswered, "pooled")


def test_train_and_eval_datasets_take_their_own_row_limits_even_from_one_dataset(tmp_path):
    from r3hf.scripts.train import load_task_dataset

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answers": [f"a{i}"]}) + "\n" for i in range(6)))
    args = R3ScriptArguments(
        dataset_name=str(path), eval_dataset_name=str(path), max_train_samples=4, max_eval_samples=2
    )
    assert len(load_task_dataset(args, args.dataset_name, "train", args.max_train_samples)) == 4
    assert len(load_task_dataset(args, args.eval_dataset_name, "train", args.max_eval_samples)) == 2


def test_demo_refuses_a_reward_top_k_above_the_candidates_before_it_starts(capsys):
    demo = load_demo()
    assert demo.parse_args(["--retrieval-top-k", "10"]).rerank_top_m == 10  # the cpu preset's m
    for flags in (["--retrieval-top-k", "11"], ["--retrieval-top-k", "0"], ["--rerank-top-m", "2"]):
        with pytest.raises(SystemExit):
            demo.parse_args(flags)
        assert ", or raise --rerank-top-m\n" in capsys.readouterr().err


def test_demo_refuses_a_calibration_it_cannot_label_before_it_starts(capsys):
    demo = load_demo()
    for flag in ("--calibration-samples", "--calibration-top-k"):
        with pytest.raises(SystemExit):
            demo.parse_args([flag, "0"])
        assert f"{flag} must be at least 1" in capsys.readouterr().err
    assert len(demo.training_questions(ROOT / "data", 8487)) == 8487  # nq_train and squad_train: 1,955 + 6,532
    with pytest.raises(ValueError, match=r"--calibration-samples 8488 .* pass at most 8487"):
        demo.training_questions(ROOT / "data", 8488)


def test_demo_trains_on_the_sets_it_is_given(capsys):
    """`--train-sets nq`: one retriever per dataset, as the paper trains, from nq_train's questions alone."""
    demo = load_demo()
    assert demo.parse_args([]).train_sets == ["nq", "squad"]
    assert demo.parse_args(["--train-sets", "nq"]).train_sets == ["nq"]
    nq = demo.training_questions(ROOT / "data", 1955, ["nq"])
    assert len(nq) == 1955 and set(nq["id"]) == set(load_qa_dataset(str(ROOT / "data" / "nq_train.jsonl.gz"))["id"])
    assert nq["id"] != sorted(nq["id"])  # shuffled, as both sets are
    with pytest.raises(ValueError, match=r"than the 1955 in \S*nq_train.jsonl.gz: pass at most 1955"):
        demo.training_questions(ROOT / "data", 1956, ["nq"])
    for flags, error in (
        (["nq", "squad", "nq"], "--train-sets names nq twice; name each once"),
        (["trivia"], "invalid choice: 'trivia' (choose from 'nq', 'squad')"),
    ):
        with pytest.raises(SystemExit):
            demo.parse_args(["--train-sets", *flags])
        assert error in capsys.readouterr().err


def test_demo_refuses_a_bad_bm25_residual_weight(capsys):
    demo = load_demo()
    assert demo.parse_args(["--bm25-residual-weight", "2.5"]).bm25_residual_weight == 2.5
    assert demo.parse_args(["--bm25-residual-weight", "fusion"]).bm25_residual_weight == "fusion"
    for bad in ("-1", "nan", "inf", "auto"):
        with pytest.raises(SystemExit):
            demo.parse_args(["--bm25-residual-weight", bad])
        expected = f"residual_weight: expected 'fusion' or a finite number at least 0, got '{bad}'"
        assert expected in capsys.readouterr().err
    resolved = demo.parse_args(["--bm25-residual-weight", "fusion"])
    assert demo.resolve_bm25_residual(resolved, {"fusion": "weighted", "fusion_weight": 0.25}) == 3.0
    assert resolved.bm25_residual_weight == 3.0


def test_demo_refuses_a_stage_with_no_steps_before_it_starts(capsys):
    demo = load_demo()
    for stage in ("offline", "online"):
        for unit, bound in (("steps", "at least 1"), ("epochs", "above 0")):
            with pytest.raises(SystemExit):
                demo.parse_args(["--preset", "gpu", f"--{stage}-{unit}", "0"])
            assert f"--{stage}-{unit} must be {bound}, got 0" in capsys.readouterr().err


def reward_with_weights(fingerprint: str):
    """A stand-in for the demo's reward whose reader has the given weights' fingerprint."""
    from types import SimpleNamespace

    return SimpleNamespace(reader=SimpleNamespace(fingerprint=fingerprint))


def test_demo_stage_is_trained_again_for_another_reader_or_other_reader_weights(tmp_path, monkeypatch):
    """A stage saved by an earlier run is loaded only when the reward's reader is the same by name and weights: a
    reader retrained in place gives other rewards, so the stage trains again."""
    from types import SimpleNamespace

    demo = load_demo()
    trained = []

    class Trainer:
        def __init__(self, model, reward, config, train, index):
            self.model, self.state = "trained", SimpleNamespace(log_history=[{"loss": 1.0}])
            trained.append(reward.reader.fingerprint)

        def train(self):
            pass

        def create_model_card(self, **kwargs):
            pass

        def save_model(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(demo, "R3Trainer", Trainer)
    monkeypatch.setattr(demo.SIDRModel, "from_pretrained", lambda folder: "loaded")
    args = demo.parse_args(["--output-dir", str(tmp_path)])

    def stage(weights: str, reader: str | None = None) -> str:
        run_args = demo.parse_args(["--output-dir", str(tmp_path), "--reader", reader]) if reader else args
        return demo.train_stage(None, reward_with_weights(weights), None, [], run_args, tmp_path, "stage1", 1)[0]

    assert stage("w") == "trained" and stage("w") == "loaded"
    assert stage("retrained") == "trained" and stage("retrained") == "loaded"
    assert stage("retrained", reader="another-reader") == "trained"
    assert trained == ["w", "retrained", "retrained"]


def test_stage1_mines_its_hard_negatives_in_the_first_stage_the_flag_names(tmp_path, monkeypatch, capsys):
    """`--stage1-first-stage`: stage 1's trainer mines in that first stage; the on-policy stages keep their own."""
    demo = load_demo()
    configs = []

    class Captured(Exception):
        pass

    def trainer(model, reward, config, train, index):
        configs.append(config)
        raise Captured

    monkeypatch.setattr(demo, "R3Trainer", trainer)
    assert demo.parse_args([]).stage1_first_stage == "bag_of_tokens"  # the paper's
    args = demo.parse_args(["--stage1-first-stage", "bm25", "--output-dir", str(tmp_path)])
    hybrid = {"first_stage": "hybrid", "fusion": "rrf", "fusion_weight": 0.5}
    for name, pipeline in (("stage1", {}), ("r3", {"first_stage": "bag_of_tokens"}), ("r3_hybrid", hybrid)):
        with pytest.raises(Captured):
            demo.train_stage(None, reward_with_weights("w"), None, [], args, tmp_path, name, 1, **pipeline)
    assert [(c.offline_only, c.first_stage, c.fusion) for c in configs] == [
        (True, "bm25", "none"),
        (False, "bag_of_tokens", "none"),
        (False, "hybrid", "rrf"),
    ]
    assert {c.seed for c in configs} == {0}  # the demo's default training seed
    with pytest.raises(Captured):
        demo.train_stage(
            None, reward_with_weights("w"), None, [], demo.parse_args(["--seed", "3"]), tmp_path, "stage1", 1
        )
    assert configs[-1].seed == 3
    for bad in ("-1", str(2**32)):
        with pytest.raises(SystemExit):
            demo.parse_args(["--seed", bad])
        assert f"--seed must be from 0 to 4294967295, got {bad}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        demo.parse_args(["--stage1-first-stage", "dense"])
    assert "invalid choice: 'dense' (choose from 'bag_of_tokens', 'bm25', 'hybrid')" in capsys.readouterr().err


def test_bench_online_steps_checks_its_own_flags_and_passes_train_sets_on(monkeypatch, capsys, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench_online_steps.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(sys, "argv", ["bench_online_steps.py", "--online-retrieval-top-k", "11"])
    with pytest.raises(SystemExit):
        bench.main()
    err = capsys.readouterr().err
    assert "--online-retrieval-top-k 11" in err and err.endswith("pick a top-k from 1 to 10\n")
    assert "--rerank-top-m" not in err and err.startswith("usage: bench_online_steps.py")
    monkeypatch.setattr(sys, "argv", ["bench_online_steps.py", "--offline-steps", "0"])
    with pytest.raises(SystemExit):
        bench.main()
    assert "--offline-steps must be at least 1, got 0" in capsys.readouterr().err
    for flag, values, repeated in (
        ("--train-sets", ["nq", "nq"], "nq"),
        ("--fusions", ["rrf", "score"] * 2, "rrf, score"),
    ):
        monkeypatch.setattr(sys, "argv", ["bench_online_steps.py", flag, *values])
        with pytest.raises(SystemExit):
            bench.main()
        err = capsys.readouterr().err
        assert err.startswith("usage: bench_online_steps.py") and f"{flag} names {repeated} twice; name each" in err
    monkeypatch.setattr(sys, "argv", ["bench_online_steps.py", "--compare", str(tmp_path)])
    with pytest.raises(SystemExit):  # before, a folder without r3_hybrid@hybrid failed only after training
        bench.main()
    assert f"--compare {tmp_path}: no r3_hybrid@hybrid folder in it" in capsys.readouterr().err
    # --train-sets reaches the demo's settings, so stage 1 and the on-policy stage train on that set alone.
    demo = load_demo()

    def load_run(args):
        raise RuntimeError(f"{args.train_sets} seed {args.seed}")

    monkeypatch.setattr(demo, "load_run", load_run)
    monkeypatch.setattr(bench, "load_demo", lambda: demo)
    argv = ["bench_online_steps.py", "--output-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(RuntimeError, match=r"^\['nq', 'squad'\] seed 0$"):
        bench.main()
    monkeypatch.setattr(sys, "argv", argv + ["--train-sets", "nq", "--seed", "3"])
    with pytest.raises(RuntimeError, match=r"^\['nq'\] seed 3$"):
        bench.main()


@pytest.mark.slow
def test_bench_stage1_negatives_trains_one_stage1_per_first_stage_and_pairs_them(tiny_setup, tmp_path, monkeypatch):
    """`benchmarks/bench_stage1_negatives.py` with tiny models and counts (the demo's flags passed through): one stage 1
    per first stage, each mining there, evaluated in both pipelines and paired with the initial and the demo's."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_stage1_negatives as bench

    data = tiny_demo_data(tmp_path / "data")
    out = tmp_path / "negatives.json"
    ours = ["--first-stages", "bag_of_tokens", "bm25", "--output-dir", str(tmp_path / "run"), "--out", str(out)]
    summary = bench.main(ours + tiny_demo_flags(tiny_setup, data))
    retrievers = ("initial", "stage1 (bag_of_tokens negatives)", "stage1 (bm25 negatives)")
    for name in ("nq_test", "squad_test"):
        assert set(summary["results"][name]["metrics"]) == {
            f"{r} @ {p}" for r in retrievers for p in ("bag_of_tokens", "hybrid")
        }
        pairs = summary["results"][name]["paired_differences"]
        bm25, reference = "stage1 (bm25 negatives) @ hybrid", "stage1 (bag_of_tokens negatives) @ hybrid"
        assert {f"{bm25} - initial @ hybrid", f"{bm25} - {reference}", f"{reference} - initial @ hybrid"} <= set(pairs)
        assert all(v["recall@1"]["n"] == 3 for v in pairs.values())
    assert summary["demo_args"]["eval_samples"] == 3 and set(summary["evaluation_fusion"]) == set(retrievers)
    for first_stage in ("bag_of_tokens", "bm25"):
        record = json.loads((tmp_path / "run" / f"stage1_{first_stage}" / "demo_stage.json").read_text())["record"]
        assert record["settings"]["first_stage"] == first_stage
    assert json.loads(out.read_text())["results"] == summary["results"] and out.with_suffix(".png").exists()
    assert all("rag_accuracy@1" not in f for f in summary["evaluation_fusion"].values())
    # Each retriever's fusion chosen by the reader's answers on the dev questions instead.
    by_reader = bench.main(ours + tiny_demo_flags(tiny_setup, data) + ["--fusion-selection", "rag_accuracy"])
    for fusion in by_reader["evaluation_fusion"].values():
        assert len(fusion["rag_accuracy@1"]) == 11 and fusion["n"] == 4
    # --fusions: the options compared are RRF and the 9 weights of a score fusion, in that order.
    by_score = bench.main(ours + tiny_demo_flags(tiny_setup, data) + ["--fusions", "rrf", "score"])
    for fusion in by_score["evaluation_fusion"].values():
        assert list(fusion["recall@1"]) == ["rrf"] + [f"score:{w / 10:g}" for w in range(1, 10)]
        assert fusion["fusion"] in ("rrf", "score")
    with pytest.raises(SystemExit):
        bench.main(["--first-stages", "bm25"])


@pytest.mark.slow
def test_bench_rerank_ceiling_reads_each_candidate_alone(tiny_setup, tmp_path, monkeypatch, capsys):
    """`benchmarks/bench_rerank_ceiling.py` with tiny models: per retriever and test set, the reader's accuracy from
    the top passage and the oracle share answered from one of the top k, which can only grow with k."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_rerank_ceiling as bench

    data = tiny_demo_data(tmp_path / "data")
    out = tmp_path / "ceiling.json"
    flags = tiny_demo_flags(tiny_setup, data)
    summary = bench.main(["--top-k", "3", "--trained", f"again={tiny_setup / 'sidr'}", "--out", str(out), *flags])
    for name in ("nq_test", "squad_test"):
        assert set(summary["results"][name]) == {"initial", "again"}
        for m in summary["results"][name].values():
            oracle = [m["oracle"][k] for k in ("1", "2", "3")]
            assert oracle[0] == m["rag_accuracy@1"] and oracle == sorted(oracle) and m["n"] == 3
            assert m["oracle_minus_top1"]["difference"] == pytest.approx(oracle[-1] - oracle[0])
        assert summary["results"][name]["again"] == summary["results"][name]["initial"]  # the same weights
    assert out.with_suffix(".png").exists()
    for bad in (["--top-k", "5"], ["--trained", "no-label"]):
        with pytest.raises(SystemExit):
            bench.main(bad + flags)
    err = capsys.readouterr().err
    assert "--top-k 5: pick from 1 to the 4 candidates" in err and "--trained takes LABEL=PATH" in err


def test_bench_fusion_dev_chooses_each_sets_fusion_on_its_own_dev_split(tiny_setup, tmp_path, monkeypatch, capsys):
    """`benchmarks/bench_fusion_dev.py` with tiny models: every retriever under both choices, the own choice made on
    that set's dev questions alone, and a trained retriever with the initial weights paired at exactly 0."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_fusion_dev as bench

    data = tiny_demo_data(tmp_path / "data")
    out = tmp_path / "fusion_dev.json"
    flags = tiny_demo_flags(tiny_setup, data)
    summary = bench.main(["--trained", f"again={tiny_setup / 'sidr'}", "--out", str(out), *flags])
    fusions = summary["evaluation_fusion"]
    assert fusions["initial, pooled dev"]["n"] == 4 and fusions["initial, nq_dev"]["n"] == 2  # --dev-samples 2 a set
    for name in ("nq_test", "squad_test"):
        result = summary["results"][name]
        assert set(result["metrics"]) == {f"{r} @ hybrid, {c}" for r in ("initial", "again") for c in bench.CHOICES}
        for pair in ("again - initial, both on pooled dev", "again - initial, both on own dev"):
            assert result["paired_differences"][pair]["correct@1"]["difference"] == 0.0  # the same weights
        assert set(result["paired_differences"]) >= {"initial: own dev - pooled dev", "again: own dev - pooled dev"}
        for folder in ("initial@hybrid_own_dev", "again@hybrid_pooled_dev"):
            assert (tmp_path / "fusion_dev" / folder / f"{name}_predictions.jsonl").exists()
    assert json.loads(out.read_text())["results"] and out.with_suffix(".png").exists()
    assert "| nq_test |" in capsys.readouterr().out
    for bad in ([], ["--trained", f"initial={tiny_setup / 'sidr'}"]):
        with pytest.raises(SystemExit):
            bench.main(bad + flags)
        assert "--trained takes LABEL=PATH with a label other than 'initial'" in capsys.readouterr().err


def test_compare_runs_pairs_two_runs_on_the_questions_both_answered(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import compare_runs

    def write(folder, rows):
        folder.mkdir(parents=True)
        (folder / "nq_test_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    a = [{"id": i, "correct@1": i % 2 == 0, "first_answer_rank": 0} for i in range(6)]
    b = [{"id": i, "correct@1": False, "first_answer_rank": None if i < 3 else 0} for i in range(1, 8)]
    write(tmp_path / "a", a)
    write(tmp_path / "b", list(reversed(b)))  # matched by id, not by position
    results = compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "d.json")])
    diffs = results["nq_test"][str(tmp_path / "b")]
    assert diffs["correct@1"]["n"] == 5 and diffs["correct@1"]["difference"] == pytest.approx(2 / 5)  # ids 2, 4
    assert diffs["recall@1"]["difference"] == pytest.approx(2 / 5)  # ids 1 and 2 have no answer in b's top 1
    assert "| nq_test |" in capsys.readouterr().out and json.loads((tmp_path / "d.json").read_text())["results"]
    assert (tmp_path / "d.png").stat().st_size > 0  # the differences, drawn
    with pytest.raises(SystemExit):
        compare_runs.main([str(tmp_path / "a"), str(tmp_path / "missing")])
    assert "no folder" in capsys.readouterr().err
    # Another training run of a: the mean of both runs, on the questions all three folders answered (2 to 5).
    write(tmp_path / "a_seed1", [{"id": i, "correct@1": True, "first_answer_rank": 0} for i in range(2, 9)])
    seeded = compare_runs.main([str(tmp_path / "a"), str(tmp_path / "b"), "--first-seeds", str(tmp_path / "a_seed1")])
    diffs = seeded["nq_test"][str(tmp_path / "b")]
    assert diffs["correct@1"]["n"] == 4 and diffs["correct@1"]["runs_a"] == 2
    assert diffs["correct@1"]["difference"] == pytest.approx((2 / 4 + 4 / 4) / 2)  # a right on 2 and 4; a_seed1 on all
    assert "(2 runs) minus" in capsys.readouterr().out


def test_every_command_takes_kebab_and_snake_flags():
    from r3hf.cli import make_parser as cli_parser

    demo = load_demo()
    for spelling in ("--eval-samples", "--eval_samples"):
        assert demo.parse_args([spelling, "7", "--rerank-top-m", "3"]).eval_samples == 7
    kebab = cli_parser().parse_args(["search", "q", "--retriever", "m", "--index", "i", "--rerank-top-m", "5"])
    snake = cli_parser().parse_args(["search", "q", "--retriever", "m", "--index", "i", "--rerank_top_m", "5"])
    assert kebab == snake and kebab.rerank_top_m == 5
    _, training_args, _ = make_parser().parse_args_and_config(
        ["--output-dir", "x", "--rerank-top-m", "9", "--retrieval_top_k", "4"]
    )
    assert training_args.rerank_top_m == 9 and training_args.retrieval_top_k == 4 and training_args.output_dir == "x"


def test_results_are_stamped_with_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A commit made while a long run works must not be stamped on its results."""
    import json

    from r3hf.scripts import utils

    started = utils.provenance()["commit"]
    monkeypatch.setattr(utils, "_git", lambda *args: "f" * 40 if args[0] == "rev-parse" else "")
    path = utils.write_result(tmp_path / "results.json", {"x": 1})
    assert json.loads(path.read_text())["provenance"]["commit"] == started != "f" * 40


def test_results_record_the_machines_matrix_product_speed(tmp_path, monkeypatch):
    """Run times on a VM only compare at a stated speed: the stamp carries a timed float32 product's GFLOP/s."""
    import json
    import time

    from r3hf.scripts import utils

    ticks = iter([10.0, 12.0])
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    assert utils.matmul_gflops(size=8, repeats=5) == 2 * 8**3 * 5 / 2.0 / 1e9
    monkeypatch.undo()
    path = utils.write_result(tmp_path / "results.json", {"x": 1})
    assert json.loads(path.read_text())["provenance"]["matmul_gflops"] > 0


def test_average_checkpoints_takes_the_mean_of_every_parameter(bert_tokenizer, tmp_path):
    """`benchmarks/average_checkpoints.py`: a retriever whose every parameter is the mean of its inputs'."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("average", ROOT / "benchmarks" / "average_checkpoints.py")
    average = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(average)
    model = make_tiny_sidr(bert_tokenizer)
    model.save_pretrained(tmp_path / "seed0")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    model.save_pretrained(tmp_path / "seed1")
    average.main([str(tmp_path / "mean"), str(tmp_path / "seed0"), str(tmp_path / "seed1")])
    a, b, mean = (SIDRModel.from_pretrained(str(tmp_path / n)).state_dict() for n in ("seed0", "seed1", "mean"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for k in a:
        torch.testing.assert_close(mean[k], (a[k] + b[k]) / 2)
    with pytest.raises(SystemExit):
        average.main([str(tmp_path / "mean"), str(tmp_path / "seed0")])
