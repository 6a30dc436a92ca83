import json
import os
import subprocess
import sys
from pathlib import Path

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
