"""README command 1's trained retrievers outside r3hf: loaded by sentence-transformers, and served from Qdrant.

On the demo's output folder (`.venv/bin/python recipes/demo.py` writes `outputs/demo/`), this

- loads each trained retriever with `SparseEncoder(path, trust_remote_code=True)` and compares its vectors on the test
  questions with `SIDRModel`'s;
- exports the demo's index (bag of tokens and bm25s part, the vendored 9,515 passages) to an in-process Qdrant
  collection, timing the export (passages per second), and E(d) as well for the first `--emb-passages` passages;
- retrieves every test question with `QdrantRetriever` in the pipelines the demo evaluates (the paper's, and the
  hybrid one with each retriever's dev-chosen fusion) and counts the questions whose retrieved passages equal the
  demo's own (`predictions/<retriever>@<pipeline>/<set>_predictions.jsonl`): equal passages give the reader the same
  context, so the same RAG accuracy;
- times the hybrid pipeline through Qdrant in-process and through r3hf's own index on the same questions, both warm.

    .venv/bin/python benchmarks/bench_qdrant.py --demo-output outputs/demo --out benchmarks/results/qdrant.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from r3hf import BagOfTokensIndex, SIDRModel, load_qa_dataset, load_table
from r3hf.integrations.qdrant import QdrantRetriever, export_index
from r3hf.scripts.utils import DATA, demo_index, read_jsonl, write_result
from r3hf.utils import ArgumentParser

TEST_SETS = ("nq_test", "squad_test")
RETRIEVERS = ("r3", "r3_hybrid")


def same_vectors(model: SIDRModel, folder: Path, texts: list[str]) -> dict:
    from sentence_transformers import SparseEncoder

    encoder = SparseEncoder(str(folder), trust_remote_code=True)
    ours = model.encode_query(texts, convert_to_sparse_tensor=False)
    theirs = encoder.encode_query(texts, convert_to_sparse_tensor=False)
    return {
        "max_relative_error": ((theirs - ours).abs().max() / ours.abs().max()).item(),
        "same_active_dims": bool(torch.equal(ours != 0, theirs != 0)),
    }


def timed_export(index, client, name: str, model=None) -> dict:
    start = time.perf_counter()
    added = export_index(index, client, name, model=model)["added"]
    seconds = time.perf_counter() - start
    return {"passages": added, "seconds": seconds, "passages_per_s": added / seconds}


def main() -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-output", type=Path, default=Path("outputs/demo"), help="README command 1's folder")
    parser.add_argument("--data", type=Path, default=DATA, help="the vendored corpus and test sets")
    parser.add_argument("--emb-passages", type=int, default=500, help="passages exported with E(d), for its speed")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    from qdrant_client import QdrantClient

    demo = json.loads((args.demo_output / "results.json").read_text())
    models = {name: SIDRModel.from_pretrained(args.demo_output / name) for name in RETRIEVERS}
    index = demo_index(models["r3"], args.data, bm25=True)
    tests = {name: load_qa_dataset(str(args.data / f"{name}.jsonl.gz")) for name in TEST_SETS}
    report = {"sentence_transformers": {}, "export": {}, "parity": {}, "speed": {}}
    for name, model in models.items():
        questions = [q for ds in tests.values() for q in ds["question"][: demo["args"]["eval_samples"]]]
        report["sentence_transformers"][name] = same_vectors(model, args.demo_output / name, questions)

    client = QdrantClient(":memory:")
    report["export"]["bag_and_bm25"] = timed_export(index, client, "demo")
    corpus = load_table(str(args.data / "corpus.jsonl.gz")).select(range(args.emb_passages))
    subset = BagOfTokensIndex.build(corpus, index.tokenizer, max_length=index.max_length)
    report["export"]["bag_and_emb"] = timed_export(subset, QdrantClient(":memory:"), "demo_emb", models["r3"])

    m, depth = demo["args"]["rerank_top_m"], 5
    for name, model in models.items():
        fusion = demo["evaluation_fusion"][name]
        for pipeline, settings in (
            ("bag_of_tokens", {"first_stage": "bag_of_tokens"}),
            (
                "hybrid",
                {"first_stage": "hybrid", "fusion": fusion["fusion"], "fusion_weight": fusion["fusion_weight"]},
            ),
        ):
            retriever = QdrantRetriever(client, "demo", model, rerank_top_m=m, bm25=index.bm25, **settings)
            for set_name in TEST_SETS:
                folder = args.demo_output / "predictions" / f"{name}@{pipeline}"
                records = read_jsonl(folder / f"{set_name}_predictions.jsonl")
                rows = retriever.retrieve([r["question"] for r in records], k=depth).rows.tolist()
                ids = [[index.corpus[i]["id"] for i in row] for row in rows]
                same = sum(got == r["retrieved_ids"] for got, r in zip(ids, records))
                accuracy = sum(r["correct@1"] for r in records) / len(records)
                report["parity"][f"{name} @ {pipeline} / {set_name}"] = {
                    "questions": len(records),
                    "same_passages": same,
                    "demo_rag_accuracy@1": accuracy,
                }

    questions = tests["nq_test"]["question"][: demo["args"]["eval_samples"]]
    model = models["r3_hybrid"]
    fusion = demo["evaluation_fusion"]["r3_hybrid"]
    settings = {"first_stage": "hybrid", "fusion": fusion["fusion"], "fusion_weight": fusion["fusion_weight"]}
    retriever = QdrantRetriever(client, "demo", model, rerank_top_m=m, bm25=index.bm25, **settings)
    for label, run in (
        ("qdrant_in_process", lambda: retriever.retrieve(questions, k=depth)),
        ("r3hf_index", lambda: model.retrieve(questions, index, k=depth, rerank_top_m=m, **settings)),
    ):
        run()  # warm: the model's first call and Qdrant's first query
        start = time.perf_counter()
        run()
        report["speed"][label] = {"queries": len(questions), "qps": len(questions) / (time.perf_counter() - start)}
    report["speed"]["qdrant_over_r3hf"] = (
        report["speed"]["qdrant_in_process"]["qps"] / report["speed"]["r3hf_index"]["qps"]
    )
    print(json.dumps(report, indent=1))
    if args.out:
        write_result(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, **report})
    return report


if __name__ == "__main__":
    main()
