import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]


def test_push_and_load_back_through_a_loopback_hub(tmp_path):
    with FakeHub() as hub:
        env = {**os.environ, **hub.client_env(tmp_path / "hf_home"), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "tests/hub_roundtrip_script.py"), str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["same_embeddings"] and report["same_search"]
        assert report["corpus"][0] == {"id": "a", "title": "Hamlet", "text": "a play by shakespeare"}
        model_files = set(hub.repos[("model", "tester/tiny-sidr")]["files"])
        assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= model_files
        card = hub.repos[("model", "tester/tiny-sidr")]["files"]["README.md"].decode()
        assert "library_name: r3hf" in card and "pipeline_tag: feature-extraction" in card
        assert report["original_layout_same_embeddings"]
        index_files = set(hub.repos[("dataset", "tester/tiny-index")]["files"])
        assert {"index.safetensors", "corpus.parquet", "index_config.json", "README.md"} <= index_files
        assert {"bm25/r3hf_bm25.json", "bm25/params.index.json"} <= index_files  # pushed beside the index
        assert report["bm25_loaded"] and report["same_hybrid_search"]
        assert report["index_url"].startswith(hub.endpoint)
        shards = [f for f in report["sharded_files"] if f.startswith("index-")]
        assert len(shards) == report["sharded_num_shards"] >= 2 and report["sharded_same_search"]
        assert len([f for f in report["sharded_files"] if f.startswith("corpus-")]) == len(shards)
        assert not [f for f in report["resharded_files"] if f.startswith(("index-", "corpus-"))]
        assert {"index.safetensors", "corpus.parquet"} <= set(report["resharded_files"])


def paper_datasets(n: int = 8) -> dict:
    """Tiny stand-ins for the QA datasets the paper recipes name, with their Hub schemas (columns, types, configs,
    splits): the answer to question i is "river {i % 3}", which passage i of `dpr_passages` holds."""
    import datasets

    questions = [f"which river flows past town {i}" for i in range(n)]
    answers = [f"river {i % 3}" for i in range(n)]
    nq = datasets.Dataset.from_dict({"question": questions, "answer": [[a] for a in answers]})
    string_list = datasets.Sequence(datasets.Value("string"))
    trivia = datasets.Dataset.from_dict(
        {
            "question": questions,
            "question_id": [f"tc_{i}" for i in range(n)],
            "question_source": ["http://www.quiz.example/"] * n,
            "entity_pages": [{"doc_source": [], "filename": [], "title": [], "wiki_context": []}] * n,
            "search_results": [
                {"description": [], "filename": [], "rank": [], "title": [], "url": [], "search_context": []}
            ]
            * n,
            "answer": [
                {
                    "aliases": [a, a.title()],
                    "normalized_aliases": [a],
                    "matched_wiki_entity_name": "",
                    "normalized_matched_wiki_entity_name": "",
                    "normalized_value": a,
                    "type": "WikipediaEntity",
                    "value": a.title(),
                }
                for a in answers
            ],
        },
        features=datasets.Features(
            {
                "question": datasets.Value("string"),
                "question_id": datasets.Value("string"),
                "question_source": datasets.Value("string"),
                "entity_pages": {
                    "doc_source": string_list,
                    "filename": string_list,
                    "title": string_list,
                    "wiki_context": string_list,
                },
                "search_results": {
                    "description": string_list,
                    "filename": string_list,
                    "rank": datasets.Sequence(datasets.Value("int32")),
                    "title": string_list,
                    "url": string_list,
                    "search_context": string_list,
                },
                "answer": {
                    "aliases": string_list,
                    "normalized_aliases": string_list,
                    "matched_wiki_entity_name": datasets.Value("string"),
                    "normalized_matched_wiki_entity_name": datasets.Value("string"),
                    "normalized_value": datasets.Value("string"),
                    "type": datasets.Value("string"),
                    "value": datasets.Value("string"),
                },
            }
        ),
    )
    hotpot = datasets.Dataset.from_dict(
        {
            "id": [f"5a8b{i:04d}" for i in range(n)],
            "question": questions,
            "answer": answers,
            "type": ["bridge"] * n,
            "level": ["medium"] * n,
            "supporting_facts": [{"title": [f"Town {i}"], "sent_id": [0]} for i in range(n)],
            "context": [
                {"title": [f"Town {i}"], "sentences": [[f"Town {i} lies on river {i % 3}."]]} for i in range(n)
            ],
        },
        features=datasets.Features(
            {
                "id": datasets.Value("string"),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
                "type": datasets.Value("string"),
                "level": datasets.Value("string"),
                "supporting_facts": {"title": string_list, "sent_id": datasets.Sequence(datasets.Value("int32"))},
                "context": {"title": string_list, "sentences": datasets.Sequence(string_list)},
            }
        ),
    )
    return {
        "google-research-datasets/nq_open": {"nq_open": {"train": nq, "validation": nq}},
        "mandarjoshi/trivia_qa": {"rc.nocontext": {"train": trivia, "validation": trivia, "test": trivia}},
        "hotpotqa/hotpot_qa": {"distractor": {"train": hotpot, "validation": hotpot}},
    }


@pytest.mark.parametrize("config", ["nq.yaml", "tqa.yaml", "hotpotqa.yaml"])
def test_paper_recipe_runs_every_stage_in_two_processes_against_a_loopback_hub(config, tmp_path, bert_tokenizer):
    from tests.conftest import launch_two_cpu_processes, make_tiny_causal_lm, make_tiny_sidr

    make_tiny_sidr(bert_tokenizer, topk=32, query_max_length=16, passage_max_length=32).save_pretrained(
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
            "retrieval_top_m": 6,
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
        assert "eval_rag_accuracy@1" in json.loads((out / "eval_results.json").read_text())
        pushed = set(hub.repos[("model", f"tester/r3-{name}")]["files"])
        assert {"config.json", "model.safetensors", "README.md"} <= pushed


PAPER_CONFIGS = sorted(p.name for p in (ROOT / "recipes/configs").glob("*.yaml") if p.name != "demo_cpu.yaml")


def run_dry_run(config: str, *flags: str, env: dict) -> subprocess.CompletedProcess:
    """The README's dry-run command for a recipe, in a fresh process on this CPU-only machine."""
    cmd = [sys.executable, "recipes/train.py", "--config", f"recipes/configs/{config}", "--dry_run", "true", *flags]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_recipe_dry_run_against_a_loopback_hub(config, tmp_path, bert_tokenizer):
    from tests.conftest import make_tiny_causal_lm, make_tiny_sidr

    make_tiny_sidr(bert_tokenizer, topk=32).save_pretrained(tmp_path / "sidr")
    make_tiny_causal_lm(bert_tokenizer).save_pretrained(tmp_path / "lm")
    bert_tokenizer.save_pretrained(tmp_path / "lm")
    rows = [f"{i}\tTown {i} lies on river {i % 3}.\tTown {i}" for i in range(16)]
    (tmp_path / "psgs_w100.tsv").write_text("id\ttext\ttitle\n" + "\n".join(rows) + "\n")
    out = [f"--output_dir={tmp_path / 'out'}", f"--index_output_dir={tmp_path / 'index'}"]
    with FakeHub() as hub:
        for repo_id, configs in paper_datasets().items():
            hub.add_dataset(repo_id, configs)
        env = hub.client_env(tmp_path / "hf_home")
        # The recipe's own Hub models are not on the loopback Hub: one clear line each, no traceback, status 1.
        missing = run_dry_run(config, *out, f"--corpus={tmp_path / 'psgs_w100.tsv'}", env=env)
        assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr[-3000:]
        problems = [line for line in missing.stderr.splitlines() if "Problem:" in line]
        assert len(problems) == 2 and all("cannot be loaded" in line for line in problems), problems
        assert any("retriever" in line for line in problems) and any("reward LLM" in line for line in problems)
        # With models at hand, every check passes; the GPU's bf16 is reported as not checked on this machine.
        models = [f"--model_name_or_path={tmp_path / 'sidr'}", f"--reward_llms={tmp_path / 'lm'}"]
        ok = run_dry_run(config, *out, *models, f"--corpus={tmp_path / 'psgs_w100.tsv'}", env=env)
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr[-3000:]
    assert "Dry run: every check passed." in ok.stderr
    if not torch.cuda.is_available():
        assert "bf16 requested: needs a GPU that supports it; this machine has none" in ok.stderr
    assert '"train_questions": 8' in ok.stderr and '"index_passages": 16' in ok.stderr


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_recipe_dry_run_offline_reports_each_unreachable_item_in_one_line(config, tmp_path):
    out = [f"--output_dir={tmp_path / 'out'}", f"--index_output_dir={tmp_path / 'index'}"]
    proc = run_dry_run(config, *out, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    problems = [line for line in proc.stderr.splitlines() if "Problem:" in line]
    # the retriever, the training and evaluation data, the corpus and the reward LLM, each named
    assert len(problems) == 5 and all("cannot be loaded" in line for line in problems), problems
    assert "Dry run found 5 problem(s)" in proc.stderr
