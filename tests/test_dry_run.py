"""The train recipe's dry run on each paper recipe: every item checked, one line per problem, an exit status."""

import os
import subprocess
import sys

import pytest
import torch

from tests.fake_hub import FakeHub
from tests.testing_utils import ROOT, paper_datasets

pytestmark = pytest.mark.slow  # each runs the recipe in a fresh process

PAPER_CONFIGS = sorted(p.name for p in (ROOT / "recipes/configs").glob("*.yaml") if p.name != "demo_cpu.yaml")


def run_dry_run(config: str, *flags: str, env: dict) -> subprocess.CompletedProcess:
    """The README's dry-run command for a recipe, in a fresh process on this CPU-only machine."""
    cmd = [sys.executable, "recipes/train.py", "--config", f"recipes/configs/{config}", "--dry-run", "true", *flags]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_recipe_dry_run_against_a_loopback_hub(config, tmp_path, bert_tokenizer):
    from tests.testing_utils import make_tiny_causal_lm, make_tiny_sidr

    make_tiny_sidr(bert_tokenizer, max_active_dims=32).save_pretrained(tmp_path / "sidr")
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
