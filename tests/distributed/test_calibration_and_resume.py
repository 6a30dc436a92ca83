"""Two CPU processes under accelerate launch: the index built once, a calibration split and resumed, and a run killed after a checkpoint that resumes to the same weights."""

import json
import os
import subprocess
import sys

import pytest

from tests.testing_utils import ROOT, launch_two_cpu_processes

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_two_processes_build_the_index_once_and_resume_a_sharded_calibration(tmp_path):
    corpus = [{"id": f"p{i}", "title": f"T{i}", "text": f"passage {i} about river {i}"} for i in range(20)]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(c) for c in corpus))
    parts = tmp_path / "run" / "calibration.jsonl.parts"
    parts.mkdir(parents=True)
    # What a crashed run with another number of processes left: questions 0 and 1 complete, question 2 cut short,
    # and a half-written line.
    done = [
        {
            "question_index": q,
            "query": f"question {q} about river {q}",
            "passage_id": f"p{d}",
            "score": 0.1,
            "label": 0,
            "generation": "",
        }
        for q, n in ((0, 3), (1, 3), (2, 1))
        for d in range(n)
    ]
    (parts / "part-rank0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in done) + '{"question_ind')
    launch_two_cpu_processes("tests/distributed/calibration_script.py", str(tmp_path))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert (tmp_path / "run" / "index" / "index_config.json").exists()
    assert reports[0]["index_rows"] == reports[1]["index_rows"] == 20
    asked = [q for r in reports for q in r["asked"]]
    assert sorted(asked) == sorted(f"question {i} about river {i}" for i in range(2, 10))  # each once, 0-1 kept
    assert reports[0]["asked"] and reports[1]["asked"]  # both processes shared the work
    records = [json.loads(line) for line in (tmp_path / "run" / "calibration.jsonl").read_text().splitlines()]
    assert len(records) == 30 and reports[0]["records"] == reports[1]["records"] == 30
    assert len({(r["query"], r["passage_id"]) for r in records}) == 30
    assert not parts.exists()


def test_sigkill_after_a_checkpoint_then_resume_gives_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    script = "tests/distributed/crash_resume_script.py"
    launch_two_cpu_processes(script, str(tmp_path), "full")
    crashed = launch_two_cpu_processes(script, str(tmp_path), "run", "--crash-at", "2", check=False)
    assert crashed.returncode != 0
    run = tmp_path / "run"
    assert (run / "checkpoint-2").is_dir() and not (run / "checkpoint-4").exists()
    assert not (tmp_path / "run.safetensors").exists()
    assert {p.name for p in (run / "reward_cache").iterdir()} >= {"rank0.sqlite", "rank1.sqlite"}

    launch_two_cpu_processes(
        script, str(tmp_path), "resumed", "--output-dir", str(run), "--resume", str(run / "checkpoint-2")
    )
    full, resumed = load_file(tmp_path / "full.safetensors"), load_file(tmp_path / "resumed.safetensors")
    assert full.keys() == resumed.keys()
    assert max((full[k] - resumed[k]).abs().max().item() for k in full) <= 1e-6
    assert any((full[k] - load_file(run / "checkpoint-2" / "model.safetensors")[k]).abs().max() > 1e-4 for k in full)

    # The same checkpoint resumed by 1 process (the same 8 questions per step) reads both processes' reward segments:
    # step 3, scored by the 2-process resume from the same weights, is all cache hits.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, str(ROOT / script), str(tmp_path), "one", "--resume", str(run / "checkpoint-2")]
        + ["--reward-cache", str(run / "reward_cache"), "--batch-size", "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    report = json.loads((tmp_path / "one-rank0.json").read_text())
    # more than the crashed run's 2 steps × 8 questions × top 4 could write: the resumed run's entries are there too
    assert report["world_size"] == 1 and report["store_size_at_start"] > 2 * 8 * 4
    assert report["hit_rates"]["3"] == 1.0
