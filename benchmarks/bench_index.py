"""Index benchmark: r3hf's bag-of-tokens, late-parametric and full parametric search against bm25s, in one run.

Prints build time, index bytes, search QPS at k=100 (and ratios to bm25s), and answer-recall@{1,5,20,100} on
nq_test and squad_test over the shared corpus. With `--scale N`, also times build and search on an N-passage corpus
made by recombining the shared passages (halves of two passages joined), where recall is not meaningful.

    python benchmarks/bench_index.py --data ../shared/data --scale 1000000 --out benchmarks/results/index.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import bm25s
import numpy as np
import torch

from r3hf import BagOfTokensIndex, SIDRModel, SparseEmbeddingIndex
from r3hf.data import load_retriever
from r3hf.evaluation import answer_recall_at_k
from r3hf.utils import plain_passage_text

KS = (1, 5, 20, 100)


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def recombined_corpus(corpus: list[dict], size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(corpus), size), rng.integers(0, len(corpus), size)
    out = []
    for i, j in zip(a.tolist(), b.tolist()):
        x, y = corpus[i]["text"].split(), corpus[j]["text"].split()
        out.append({"title": corpus[i]["title"], "text": " ".join(x[: len(x) // 2] + y[len(y) // 2 :])})
    return out


def build_bm25(corpus: list[dict]) -> bm25s.BM25:
    """bm25s's own recipe: tokenize (English stopwords) then index."""
    bm25 = bm25s.BM25()
    bm25.index(
        bm25s.tokenize([plain_passage_text(p) for p in corpus], stopwords="en", show_progress=False),
        show_progress=False,
    )
    return bm25


def dense_rows(index: SparseEmbeddingIndex, ids: list[int]) -> torch.Tensor:
    """The stored E(d) of some passages as a dense `[len(ids), V]` tensor."""
    out = torch.zeros(len(ids), index.vocab_size)
    for j, d in enumerate(ids):
        lo, hi = index.indptr[d], index.indptr[d + 1]
        out[j, torch.from_numpy(index.indices[lo:hi].astype(np.int64))] = torch.from_numpy(
            index.values[lo:hi].astype(np.float32)
        )
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def bench_speed(corpus: list[dict], model: SIDRModel, query_embeds: torch.Tensor, questions: list[str], label: str):
    """Build time, bytes and QPS at k=100 of the bag-of-tokens index and of bm25s on one corpus."""
    index, t_build = timed(BagOfTokensIndex.build, corpus, model.tokenizer, model.config.passage_max_length)
    bm25, t_bm25_build = timed(build_bm25, corpus)
    rows = {}
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        index.search(query_embeds[:8], k=100)  # warm-up
        _, t_search = timed(lambda: [index.search(q, 100) for q in query_embeds.split(256)])
        rows[threads] = len(questions) / t_search
    torch.set_num_threads(max(rows))
    query_tokens, t_qtok = timed(bm25s.tokenize, questions, stopwords="en", show_progress=False)
    (_, _), t_bm25_search = timed(bm25.retrieve, query_tokens, k=100, show_progress=False)
    bm25_qps = len(questions) / (t_bm25_search + t_qtok)
    bm25_bytes = sum(getattr(bm25.scores[k], "nbytes", 0) for k in ("data", "indices", "indptr"))
    print(f"\n## Speed on {label} ({len(corpus):,} passages, {len(questions)} queries, k=100)\n")
    print("| index | build s | index MB | QPS (1 thread) | QPS (all threads) |")
    print("|---|---|---|---|---|")
    print(
        f"| r3hf bag-of-tokens | {t_build:.2f} | {index.nbytes / 2**20:.1f} | {rows[1]:.0f} | {rows[max(rows)]:.0f} |"
    )
    print(f"| bm25s | {t_bm25_build:.2f} | {bm25_bytes / 2**20:.1f} | {bm25_qps:.0f} (1 thread) | – |")
    print(
        f"| ratio r3hf / bm25s | {t_build / t_bm25_build:.2f}× time | {index.nbytes / bm25_bytes:.2f}× | "
        f"{rows[1] / bm25_qps:.2f}× | {rows[max(rows)] / bm25_qps:.2f}× |"
    )
    return index, {
        "label": label,
        "passages": len(corpus),
        "build_s": t_build,
        "bm25s_build_s": t_bm25_build,
        "index_bytes": index.nbytes,
        "bm25s_bytes": bm25_bytes,
        "qps_1_thread": rows[1],
        "qps_all_threads": rows[max(rows)],
        "threads": max(rows),
        "bm25s_qps": bm25_qps,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--retriever", default="all-minilm-l6-v2", help="offline asset name or model path")
    parser.add_argument("--scale", type=int, default=0, help="also time an N-passage recombined corpus")
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
    results = {"retriever": args.retriever, "speed": []}

    index, speed = bench_speed(corpus, model, query_embeds, questions, "the shared corpus")
    results["speed"].append(speed)

    # Quality on the real corpus. The full parametric index embeds every passage once; late-parametric re-ranking
    # embeds the top-100 candidates with the same encoder, which gives the same scores as on-the-fly embedding.
    para, t_para = timed(SparseEmbeddingIndex.build, corpus, model, 32, True)
    print(
        f"\nFull parametric index: built in {t_para:.0f}s ({len(corpus) / t_para:.1f} passages/s), "
        f"{para.nbytes / 2**20:.1f} MB"
    )
    bm25 = build_bm25(corpus)
    results["recall"] = {}
    offset = 0
    for name, qs in tests.items():
        q = query_embeds[offset : offset + len(qs)]
        offset += len(qs)
        answers = [x["answers"] for x in qs]
        bot = index.search(q, 100)
        scores = torch.stack([dense_rows(para, ids) @ q[r] for r, ids in enumerate(bot.ids.tolist())])
        late = bot.ids.gather(1, scores.sort(dim=1, descending=True, stable=True).indices)
        full = para.search(q, 100)
        docs, _ = bm25.retrieve(
            bm25s.tokenize([x["question"] for x in qs], stopwords="en", show_progress=False),
            k=100,
            show_progress=False,
        )
        methods = {
            "bag-of-tokens E(q)·T(d)": bot.ids,
            "late-parametric (m=100)": late,
            "full parametric E(q)·E(d)": full.ids,
            "bm25s": torch.from_numpy(np.asarray(docs)),
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

    if args.scale:
        big = recombined_corpus(corpus, args.scale)
        _, speed = bench_speed(big, model, query_embeds, questions, f"a recombined {args.scale:,}-passage corpus")
        results["speed"].append(speed)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
