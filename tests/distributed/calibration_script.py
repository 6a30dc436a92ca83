"""Run by test_recipes.py under `accelerate launch` (2 CPU processes): build the index once and calibrate in shards,
resuming the part file a crashed earlier run left behind; each rank reports what it did."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
from accelerate import PartialState
from transformers import AutoTokenizer

from r3hf import R3Config
from r3hf.assets import offline_model_path
from r3hf.scripts.train import R3ScriptArguments, build_or_load_index, calibrate
from tests.testing_utils import make_tiny_sidr


class StubReward:
    """Labels candidates without an LLM and remembers which questions it was asked about."""

    reader = SimpleNamespace(fingerprint="stub weights")

    def __init__(self):
        self.asked, self.calibration = [], None

    def label_by_generation(self, queries, answers, candidates):
        self.asked += list(queries)
        return [
            {"query": q, "passage_id": p["id"], "score": 0.5, "label": int(p["id"] in a), "generation": ""}
            for q, a, ps in zip(queries, answers, candidates)
            for p in ps
        ]


def main(out: Path):
    _ = R3Config(output_dir=str(out / "run"), use_cpu=True, ddp_backend="gloo").device  # set up the 2 CPU processes
    state = PartialState()
    tokenizer = AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))
    model = make_tiny_sidr(tokenizer)
    args = R3ScriptArguments(
        dataset_name="unused", corpus=str(out / "corpus.jsonl"), calibration_samples=10, calibration_top_k=3
    )
    index = build_or_load_index(args, model, str(out / "run"), state)
    train = datasets.Dataset.from_list(
        [{"question": f"question {i} about river {i}", "answers": [f"p{i}"]} for i in range(12)]
    )
    reward = StubReward()
    calibrate(args, reward, model, index, train, str(out / "run" / "calibration.jsonl"), state, chunk_size=2)
    report = {"asked": reward.asked, "index_rows": len(index), "records": len(reward.calibration.records)}
    (out / f"rank{state.process_index}.json").write_text(json.dumps(report))
    state.wait_for_everyone()
    state.destroy_process_group()  # as the train script: no process exits with its process group alive


if __name__ == "__main__":
    main(Path(sys.argv[1]))
