"""Run by test_hub.py with HF_ENDPOINT pointing at the loopback fake Hub: push a retriever and an index, load both
back by repo id, and report what came back."""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from r3hf import BagOfTokensIndex, SIDRModel
from r3hf.assets import offline_model_path
from tests.conftest import make_tiny_sidr


def main(out: Path):
    tokenizer = AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))
    model = make_tiny_sidr(tokenizer)
    model_url = model.push_to_hub("tester/tiny-sidr")
    corpus = [
        {"id": "a", "title": "Hamlet", "text": "a play by shakespeare"},
        {"id": "b", "title": "", "text": "paris"},
    ]
    index = BagOfTokensIndex.build(corpus, tokenizer)
    index_url = index.push_to_hub("tester/tiny-index")
    loaded = SIDRModel.from_pretrained("tester/tiny-sidr")
    loaded_index = BagOfTokensIndex.from_pretrained("tester/tiny-index", tokenizer=loaded.tokenizer)
    q = ["who wrote hamlet"]
    report = {
        "model_url": str(model_url),
        "index_url": index_url,
        "same_embeddings": torch.equal(loaded.encode_queries(q), model.encode_queries(q)),
        "same_search": torch.equal(
            loaded.retrieve(q, loaded_index, k=2, rerank_top_m=2).ids,
            model.retrieve(q, index, k=2, rerank_top_m=2).ids,
        ),
        "corpus": loaded_index.corpus.to_list(),
    }
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
