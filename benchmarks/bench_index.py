"""Index benchmark: answer recall of r3hf's bag-of-tokens, late-parametric and full parametric search against bm25s,
on nq_test and squad_test over the shared corpus (speed and memory at scale: `bench_scale.py`).

    python benchmarks/bench_index.py --out benchmarks/results/index.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from r3hf import BagOfTokensIndex, SparseEmbeddingIndex
from r3hf.evaluation import answer_recall_at_k
from r3hf.models import load_retriever
from r3hf.scripts.utils import DATA, read_jsonl, timed, write_result
from r3hf.utils import ArgumentParser

KS = (1, 5, 20, 100)


def dense_rows(index: SparseEmbeddingIndex, ids: list[int]) -> torch.Tensor:
    """The stored E(d) of some passages as a dense `[len(ids), V]` tensor."""
    out = torch.zeros(len(ids), index.vocab_size)
    for j, d in enumerate(ids):
        lo, hi = index.indptr[d], index.indptr[d + 1]
        out[j, torch.from_numpy(index.indices[lo:hi].astype(np.int64))] = torch.from_numpy(
            index.values[lo:hi].astype(np.float32)
        )
    return out


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--retriever", default="all-minilm-l6-v2", help="offline asset name or model path")
    parser.add_argument("--max-queries", type=int, default=0, help="cap on queries per test set (0: all)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    data = Path(args.data)
    corpus = read_jsonl(data / "corpus.jsonl.gz")
    model = load_retriever(args.retriever)
    tests = {name: read_jsonl(data / f"{name}_test.jsonl.gz") for name in ("nq", "squad")}
    if args.max_queries:
        tests = {k: v[: args.max_queries] for k, v in tests.items()}
    questions = [q["question"] for qs in tests.values() for q in qs]
    query_embeds, t_qenc = timed(model.encode_query, questions, 64, True)
    print(f"Encoded {len(questions)} queries in {t_qenc:.1f}s ({len(questions) / t_qenc:.0f}/s) with {args.retriever}")
    results = {"retriever": args.retriever}
    index = BagOfTokensIndex.build(corpus, model.tokenizer, model.config.passage_max_length)
    index.add_bm25()

    # Quality on the real corpus. The full parametric index embeds every passage once; late-parametric re-ranking
    # embeds the top-100 candidates with the same encoder, which gives the same scores as on-the-fly embedding.
    para, t_para = timed(SparseEmbeddingIndex.build, corpus, model, 32, True)
    print(
        f"\nFull parametric index: built in {t_para:.0f}s ({len(corpus) / t_para:.1f} passages/s), "
        f"{para.nbytes / 2**20:.1f} MB"
    )
    results["recall"] = {}
    offset = 0
    for name, qs in tests.items():
        q = query_embeds[offset : offset + len(qs)]
        offset += len(qs)
        answers = [x["answers"] for x in qs]
        bot = index.search(q, 100)
        scores = torch.stack([dense_rows(para, ids) @ q[r] for r, ids in enumerate(bot.rows.tolist())])
        late = bot.rows.gather(1, scores.sort(dim=1, descending=True, stable=True).indices)
        full = para.search(q, 100)
        docs = index.bm25.retrieve([x["question"] for x in qs], k=100).rows
        methods = {
            "bag-of-tokens E(q)·T(d)": bot.rows,
            "late-parametric (m=100)": late,
            "full parametric E(q)·E(d)": full.rows,
            "bm25s": docs,
        }
        results["recall"][name] = {}
        print(f"\n## Answer recall on {name}_test ({len(qs)} questions, shared corpus)\n")
        print("| method | " + " | ".join(f"@{k}" for k in KS) + " |")
        print("|---|" + "---|" * len(KS))
        for method, ids in methods.items():
            retrieved = [[corpus[i] for i in row] for row in ids.tolist()]
            recall = answer_recall_at_k(retrieved, answers, KS)
            results["recall"][name][method] = recall
            print(f"| {method} | " + " | ".join(f"{100 * recall[f'answer_recall@{k}']:.1f}" for k in KS) + " |")

    if args.out:
        write_result(args.out, results)


if __name__ == "__main__":
    main()
