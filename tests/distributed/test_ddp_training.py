"""Two CPU processes under accelerate launch train as one: the same weights and metrics on both ranks."""

import json

import pytest

from tests.testing_utils import launch_two_cpu_processes

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_two_process_accelerate_launch_agrees_on_weights_and_metrics(tmp_path):
    launch_two_cpu_processes("tests/distributed/ddp_train_script.py", str(tmp_path))
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["world_size"] == reports[1]["world_size"] == 2
    assert reports[0]["checksum"] == reports[1]["checksum"]
    assert reports[0]["steps"] == 2 and reports[0]["checksum"] != reports[0]["initial_checksum"]
    # step metrics are averaged over processes, so both ranks log the same numbers
    assert reports[0]["logged"] == reports[1]["logged"]
    assert "profiling/retrieval_s" in reports[0]["logged"]
