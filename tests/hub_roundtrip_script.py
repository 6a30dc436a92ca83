"""Run by test_hub.py with HF_ENDPOINT pointing at the loopback fake Hub: push a retriever and an index, load both
back by repo id, and report what came back."""

import json
import sys
from pathlib import Path

import torch
from huggingface_hub import HfApi
from transformers import AutoTokenizer, BertConfig

from r3hf import BagOfTokensIndex, SIDRModel
from r3hf.assets import offline_model_path
from tests.testing_utils import TINY_BERT, dense_query, make_tiny_sidr, write_original_checkpoint


def main(out: Path):
    tokenizer = AutoTokenizer.from_pretrained(offline_model_path("splade-tiny"))
    model = make_tiny_sidr(tokenizer)
    model_url = model.push_to_hub("tester/tiny-sidr")
    corpus = [
        {"id": "a", "title": "Hamlet", "text": "a play by shakespeare"},
        {"id": "b", "title": "", "text": "paris"},
    ]
    index = BagOfTokensIndex.build(corpus, tokenizer)
    index.add_bm25()
    index_url = index.push_to_hub("tester/tiny-index")
    loaded = SIDRModel.from_pretrained("tester/tiny-sidr")
    loaded_index = BagOfTokensIndex.from_pretrained("tester/tiny-index", tokenizer=loaded.tokenizer)
    q = ["who wrote hamlet"]
    report = {
        "model_url": str(model_url),
        "index_url": index_url,
        "same_embeddings": torch.equal(dense_query(loaded, q), dense_query(model, q)),
        "same_search": torch.equal(
            loaded.retrieve(q, loaded_index, k=2, rerank_top_m=2).rows,
            model.retrieve(q, index, k=2, rerank_top_m=2).rows,
        ),
        "corpus": loaded_index.corpus.to_list(),
        "bm25_loaded": loaded_index.bm25 is not None,
        "same_hybrid_search": torch.equal(
            loaded.retrieve(q, loaded_index, k=2, rerank_top_m=2, first_stage="hybrid").rows,
            model.retrieve(q, index, k=2, rerank_top_m=2, first_stage="hybrid").rows,
        ),
    }
    # A checkpoint in the original SiDR layout, loaded straight from its Hub repo.
    bert_config = BertConfig(vocab_size=len(tokenizer), **TINY_BERT)
    bert_config.save_pretrained(out / "encoder")
    write_original_checkpoint(out / "original", bert_config, model_id=str(out / "encoder"))
    tokenizer.save_pretrained(out / "original")
    HfApi().create_repo("tester/original-sidr")
    HfApi().upload_folder(repo_id="tester/original-sidr", folder_path=str(out / "original"))
    from_hub = SIDRModel.from_pretrained("tester/original-sidr")
    from_disk = SIDRModel.from_pretrained(out / "original")
    report["original_layout_same_embeddings"] = torch.equal(dense_query(from_hub, q), dense_query(from_disk, q))
    # A multi-shard index: pushed, loaded back by repo id, then pushed again as one shard (stale shards deleted).
    big = BagOfTokensIndex.build([f"passage {i} about river {i % 7}" for i in range(30)], tokenizer, max_length=12)
    small = big.shards[0].term_indptr.nbytes + 1000
    big.push_to_hub("tester/sharded-index", max_shard_size=small)
    report["sharded_files"] = sorted(HfApi().list_repo_files("tester/sharded-index", repo_type="dataset"))
    sharded = BagOfTokensIndex.from_pretrained("tester/sharded-index")
    queries = dense_query(model, ["river 3", "passage 12"])
    report["sharded_num_shards"] = len(sharded.shards)
    report["sharded_same_search"] = torch.equal(sharded.search(queries, 10).rows, big.search(queries, 10).rows)
    big.push_to_hub("tester/sharded-index")
    report["resharded_files"] = sorted(HfApi().list_repo_files("tester/sharded-index", repo_type="dataset"))
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
