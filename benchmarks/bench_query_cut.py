"""Query pruning: candidates from E(q)'s top-c terms only, each scored with the whole E(q) (`search(query_cut=c)`).

E(q) of a SIDR retriever has 768 positive weights; every engine's pruning slows with query length. For each c this
measures, against the exact search (`query_cut=None`), on the same queries, both warm, one thread:

- on a corpus recombined from the vendored passages (`--passages`, said so in the results): queries per second of
  the top-`m` bag-of-tokens search, and the recall of the exact top `m`;
- on the vendored corpus itself: answer recall@1 and @5 of the paper's pipeline after the re-rank by E(q)·E(d)
  (the demo's 10 candidates), on the first `--questions` of nq_test and of squad_test.

    .venv/bin/python benchmarks/bench_query_cut.py --out benchmarks/results/query_cut.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_scale import recombined_parquet

from r3hf import BagOfTokensIndex, load_qa_dataset, load_table
from r3hf.evaluation import answer_recall_at_k
from r3hf.retrieval import cached_passage_embeddings
from r3hf.scripts.utils import DATA, demo_index, demo_retriever, read_jsonl, write_result
from r3hf.utils import ArgumentParser

TEST_SETS = ("nq_test", "squad_test")


def timed_search(index, query_embeds: torch.Tensor, m: int, query_cut: int | None) -> tuple[torch.Tensor, float]:
    index.search(query_embeds[:8], k=m, query_cut=query_cut, num_threads=1)  # warm
    start = time.perf_counter()
    rows = index.search(query_embeds, k=m, query_cut=query_cut, num_threads=1).rows
    return rows, len(query_embeds) / (time.perf_counter() - start)


def overlap(rows: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(rows, exact)) / exact.numel()


def main() -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="the vendored corpus and test sets")
    parser.add_argument("--retriever", default="all-minilm-l6-v2", help="the retriever (a trained one: its folder)")
    parser.add_argument("--passages", type=int, default=100_000, help="passages of the recombined corpus")
    parser.add_argument("--cuts", type=int, nargs="+", default=[16, 32, 64, 128, 256], help="the values of c")
    parser.add_argument("--rerank-top-m", type=int, default=100, help="m of the speed half: candidates per query")
    parser.add_argument("--pipeline-top-m", type=int, default=10, help="m of the pipeline half (the demo's)")
    parser.add_argument("--questions", type=int, default=100, help="questions per test set")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    model = demo_retriever(args.retriever)
    tests = {
        name: load_qa_dataset(str(args.data / f"{name}.jsonl.gz")).select(range(args.questions)) for name in TEST_SETS
    }
    questions = [q for ds in tests.values() for q in ds["question"]]
    query_embeds = model.encode_query(questions, convert_to_sparse_tensor=False)
    cuts = [None, *args.cuts]
    report = {"corpus": f"{args.passages:,} passages recombined from the vendored {DATA.name}/corpus.jsonl.gz"}

    with tempfile.TemporaryDirectory() as tmp:
        recombined_parquet(read_jsonl(args.data / "corpus.jsonl.gz"), args.passages, Path(tmp) / "corpus.parquet")
        large = BagOfTokensIndex.build(load_table(str(Path(tmp) / "corpus.parquet")), model.tokenizer, max_length=128)
    exact, _ = timed_search(large, query_embeds, args.rerank_top_m, None)
    speed = {}
    for c in cuts:
        rows, qps = timed_search(large, query_embeds, args.rerank_top_m, c)
        speed[str(c or "exact")] = {"qps": qps, "recall_of_exact_top_m": overlap(rows, exact)}
    report["speed"] = speed

    index = demo_index(model, args.data)
    quality = {}
    with cached_passage_embeddings(model):  # each candidate embedded once across every c
        for c in cuts:
            quality[str(c or "exact")] = {}
            for name, ds in tests.items():
                rows = model.retrieve(ds["question"], index, k=5, rerank_top_m=args.pipeline_top_m, query_cut=c).rows
                recall = answer_recall_at_k(index.get_passages(rows), ds["answers"], ks=(1, 5))
                quality[str(c or "exact")][name] = recall
    report["answer_recall"] = quality
    print(json.dumps(report, indent=1))
    if args.out:
        write_result(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, **report})
    return report


if __name__ == "__main__":
    main()
