"""The bag-of-tokens index at scale, on corpora recombined from the shared passages (each passage: the first half of
one shared passage's words joined to the second half of another's; word statistics are Wikipedia's, but the number
of distinct words grows far slower than in a real corpus, which flatters the chunk-cached tokenizer's build time).

For each size: build time (1 process, and `num_proc=2`), the index's bm25s part on the same texts (`--bm25s-max`:
build, bytes, QPS with query tokenization, memory-mapped load and QPS after it, and the hybrid first stage's QPS),
index bytes, save time, load time (first load, which converts the corpus parquet to Arrow once, then later loads;
with and without memory mapping), the memory of one and of two processes that load the index at once and search it
(proportional set size from `/proc/PID/smaps_rollup`, so shared pages count once), and CPU search QPS at k=100 with 1
and 2 threads for the row-major layout (CSR chunks summed by r3hf's kernels, and the same search summed by torch's
sparse CSR product, its peer) and the term-major layout (with the compiled numba scatter of `r3hf.index.postings` when
installed, and without it: SciPy), ids checked identical, and the term-major layout again on the saved index loaded
memory-mapped (as training searches it). Every search figure is warm (one small search first) and times the same
work: queries already encoded, k = 100.
Then a projection of each figure to DPR's 21M passages.

    python benchmarks/bench_scale.py --sizes 1000000 5000000 --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import datasets
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from r3hf import BagOfTokensIndex, BM25Retriever
from r3hf.index import postings
from r3hf.models import load_retriever
from r3hf.retrieval import first_stage_candidates
from r3hf.scripts.utils import DATA, read_jsonl, timed, write_result
from r3hf.utils import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]
DPR_PASSAGES = 21_015_324


def recombined_parquet(corpus: list[dict], size: int, path: Path, seed: int = 0, chunk: int = 200_000) -> None:
    """Write `size` recombined passages to a parquet file, `chunk` at a time (never all in memory)."""
    rng = np.random.default_rng(seed)
    words = [p["text"].split() for p in corpus]
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])) as w:
        for start in range(0, size, chunk):
            n = min(chunk, size - start)
            a, b = rng.integers(0, len(corpus), n).tolist(), rng.integers(0, len(corpus), n).tolist()
            texts = [" ".join(words[i][: len(words[i]) // 2] + words[j][len(words[j]) // 2 :]) for i, j in zip(a, b)]
            w.write_table(
                pa.table(
                    {
                        "id": [str(start + r) for r in range(n)],
                        "title": [corpus[i]["title"] for i in a],
                        "text": texts,
                    }
                )
            )


@contextlib.contextmanager
def torch_csr_row_major():
    """Within the block, CPU row-major search sums with torch's sparse CSR product instead of r3hf's kernels."""
    from r3hf.index import IndexShard

    def scores(shard, start, stop, queries_t, num_threads):
        lo, hi = int(shard.indptr[start]), int(shard.indptr[stop])
        values = shard.values[lo:hi].astype(np.float32) if shard.values is not None else np.ones(hi - lo, np.float32)
        block = torch.sparse_csr_tensor(
            torch.from_numpy(shard.indptr[start : stop + 1] - lo),
            torch.from_numpy(shard.indices[lo:hi].astype(np.int32)),
            torch.from_numpy(values),
            size=(stop - start, queries_t.shape[0]),
        )
        return (block @ torch.from_numpy(queries_t)).numpy()

    original = IndexShard.row_major_scores
    IndexShard.row_major_scores = scores
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        IndexShard.row_major_scores = original


def qps(index, queries, layout: str, threads: int, n: int) -> tuple[float, torch.Tensor]:
    torch.set_num_threads(threads)
    index.search(queries[:4], 100, layout=layout, num_threads=threads)  # warm-up: pages, caches
    results, seconds = timed(
        lambda: torch.cat(
            [index.search(q, 100, layout=layout, num_threads=threads).rows for q in queries[:n].split(64)]
        )
    )
    return n / seconds, results


LOADER = """
import json, sys, time, torch
from r3hf import BagOfTokensIndex
from r3hf.index import postings
if postings.available():  # in the baseline too: the index's share of memory should not count the compiler
    import numba
queries = torch.load(sys.argv[3])
start = time.perf_counter()
if sys.argv[1] != "-":  # "-": the baseline, an interpreter with the same imports and no index
    index = BagOfTokensIndex.from_pretrained(sys.argv[1], mmap=sys.argv[2] == "1")
    index.search(queries, 100)
    rows = index.corpus[:1000]["text"]
load_s = time.perf_counter() - start
print(json.dumps({"load_s": load_s}), flush=True)
sys.stdin.readline()  # hold the memory until the parent has read the proportional set sizes
"""


def proportional_set_size(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def memory_of_loaders(folder: Path | str, queries_file: Path, n_processes: int, mmap: bool) -> dict:
    """Start `n_processes` that load the index and search it, then sum their proportional set sizes."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOADER, str(folder), "1" if mmap else "0", str(queries_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(n_processes)
    ]
    loads = [json.loads(p.stdout.readline())["load_s"] for p in procs]
    pss = [proportional_set_size(p.pid) for p in procs]
    for p in procs:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait()
    return {"processes": n_processes, "mmap": mmap, "pss_bytes": sum(pss), "load_s": loads}


def bench_size(size: int, corpus: list[dict], model, queries: torch.Tensor, args, work: Path) -> dict:
    shared = size == len(corpus)  # the shared corpus itself, not recombined
    print(f"\n# {size:,} {'shared' if shared else 'recombined'} passages", flush=True)
    parquet = work / f"{'shared' if shared else 'recombined'}-{size}.parquet"
    if shared:
        pq.write_table(pa.Table.from_pylist(corpus), parquet)
    elif not parquet.exists():
        recombined_parquet(corpus, size, parquet)
    texts = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(work / "datasets"))
    row = {"passages": size, "corpus": "shared" if shared else "recombined"}
    index, row["build_s"] = timed(BagOfTokensIndex.build, texts, model.tokenizer, 128, show_progress_bar=True)
    row["index_bytes"], row["nonzeros"] = index.nbytes, int(sum(s.indptr[-1] for s in index.shards))
    print(f"build {row['build_s']:.1f}s, {row['index_bytes'] / 2**20:.0f} MB (both layouts)", flush=True)
    if not args.skip_num_proc:
        double, row["build_2proc_s"] = timed(BagOfTokensIndex.build, texts, model.tokenizer, 128, num_proc=2)
        assert np.array_equal(double.indices, index.indices)
        del double
        print(f"build with num_proc=2: {row['build_2proc_s']:.1f}s", flush=True)
    row["term_major_kernel"] = "numba" if postings.available() else "scipy"
    for threads in (1, 2):
        row[f"qps_term_major_{threads}_thread"], term_ids = qps(index, queries, "term_major", threads, args.queries)
        if postings.available():  # the same layout without the compiled kernel
            postings.ENABLED = False
            row[f"qps_term_major_scipy_{threads}_thread"], scipy_ids = qps(
                index, queries, "term_major", threads, args.queries
            )
            postings.ENABLED = True
            assert torch.equal(scipy_ids, term_ids), "the two term-major kernels disagree"
        n_row = min(args.queries, args.row_major_queries)
        row[f"qps_row_major_{threads}_thread"], row_ids = qps(index, queries, "row_major", threads, n_row)
        assert torch.equal(term_ids[:n_row], row_ids), "the two layouts disagree"
        # The peer: the same row-major search summed by torch's sparse CSR product (MKL), as r3hf did on CPU before
        # it summed with its own kernels; timed the same way, in the same run.
        with torch_csr_row_major():
            row[f"qps_row_major_torch_csr_{threads}_thread"], _ = qps(index, queries, "row_major", threads, n_row)
        print(
            f"{threads} thread(s): term-major ({row['term_major_kernel']}) "
            f"{row[f'qps_term_major_{threads}_thread']:.1f} QPS, "
            + (
                f"term-major (scipy) {row[f'qps_term_major_scipy_{threads}_thread']:.1f} QPS, "
                if postings.available()
                else ""
            )
            + f"row-major {row[f'qps_row_major_{threads}_thread']:.1f} QPS (identical ids), "
            + f"row-major via torch CSR {row[f'qps_row_major_torch_csr_{threads}_thread']:.1f} QPS",
            flush=True,
        )

    questions = args.questions[: args.queries]
    if size <= args.bm25s_max:  # the index's bm25s part: bm25s's own build, tokenization included
        _, row["bm25s_build_s"] = timed(index.add_bm25)
        row["bm25s_bytes"] = sum(index.bm25.bm25.scores[k].nbytes for k in ("data", "indices", "indptr"))
        index.bm25.search(questions[:4], 100)  # warm-up (bm25s compiles its top-k on first use), as for every figure
        _, seconds = timed(index.bm25.search, questions, 100)
        row["bm25s_qps_1_thread"] = len(questions) / seconds  # query tokenization included (bm25s needs text)
        # The same work as r3hf's figures, which exclude query encoding: queries tokenized before the timer.
        tokens = index.bm25.tokenize(questions)
        _, seconds = timed(index.bm25.bm25.retrieve, tokens, k=100, show_progress=False, n_threads=1)
        row["bm25s_qps_1_thread_tokenized"] = len(questions) / seconds
        # Both warm, queries prepared before the timer.
        row["term_major_vs_bm25s_1_thread"] = row["qps_term_major_1_thread"] / row["bm25s_qps_1_thread_tokenized"]
        print(
            f"bm25s part: build {row['bm25s_build_s']:.1f}s, QPS {row['bm25s_qps_1_thread']:.1f} with query "
            f"tokenization, {row['bm25s_qps_1_thread_tokenized']:.1f} without",
            flush=True,
        )

    folder = work / f"index-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    _, row["save_s"] = timed(index.save_pretrained, folder)
    row["saved_bytes"] = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    row["saved_shards"] = len(list(folder.glob("index*.safetensors")))
    del index, texts  # with its bm25s part: the loaders below need the memory
    gc.collect()
    _, row["first_load_s"] = timed(BagOfTokensIndex.from_pretrained, folder)
    loaded, row["load_s_mmap"] = timed(BagOfTokensIndex.from_pretrained, folder)
    # The index as training searches it: loaded, memory-mapped.
    row["qps_term_major_loaded_mmap_1_thread"], loaded_ids = qps(loaded, queries, "term_major", 1, args.queries)
    assert torch.equal(loaded_ids, term_ids), "the loaded index searches differently"
    if loaded.bm25 is not None:
        _, row["bm25s_load_s_mmap"] = timed(BM25Retriever.from_pretrained, folder / "bm25", loaded)
        loaded.bm25.search(questions[:4], 100)
        _, seconds = timed(loaded.bm25.search, questions, 100)
        row["bm25s_qps_loaded_mmap_1_thread"] = len(questions) / seconds
        first_stage_candidates(loaded, questions[:4], queries[:4], 100, "hybrid")
        _, seconds = timed(first_stage_candidates, loaded, questions, queries[: len(questions)], 100, "hybrid")
        row["hybrid_first_stage_qps_1_thread"] = len(questions) / seconds  # both lists and their union, no re-rank
        print(
            f"bm25s part loaded mmap in {row['bm25s_load_s_mmap']:.2f}s: {row['bm25s_qps_loaded_mmap_1_thread']:.1f} "
            f"QPS; hybrid first stage (m = 100) {row['hybrid_first_stage_qps_1_thread']:.1f} QPS",
            flush=True,
        )
    del loaded
    _, row["load_s_no_mmap"] = timed(BagOfTokensIndex.from_pretrained, folder, mmap=False)
    print(
        f"save {row['save_s']:.1f}s ({row['saved_shards']} shards, {row['saved_bytes'] / 2**20:.0f} MB); load: first "
        f"{row['first_load_s']:.1f}s, mmap {row['load_s_mmap']:.2f}s, no mmap {row['load_s_no_mmap']:.1f}s",
        flush=True,
    )
    queries_file = work / "queries.pt"
    torch.save(queries[:64].clone(), queries_file)
    baseline = memory_of_loaders("-", queries_file, 1, False)["pss_bytes"]
    row["pss_interpreter"] = baseline
    for mmap in (True, False):
        key = "mmap" if mmap else "no_mmap"
        one = memory_of_loaders(folder, queries_file, 1, mmap)
        row[f"pss_one_{key}"] = one["pss_bytes"]
        if 2 * one["pss_bytes"] > 0.9 * psutil.virtual_memory().available:
            # Two private copies would not fit in this machine's memory: the kernel would kill the benchmark.
            row[f"pss_two_{key}_skipped"] = f"two processes need ~{2 * one['pss_bytes'] / 2**30:.1f} GiB"
            print(f"memory ({key}): one process {one['pss_bytes'] / 2**20:.0f} MB; two not run (memory)", flush=True)
            continue
        two = memory_of_loaders(folder, queries_file, 2, mmap)
        row[f"pss_two_{key}"] = two["pss_bytes"]
        row[f"pss_ratio_{key}"] = two["pss_bytes"] / one["pss_bytes"]
        row[f"pss_index_ratio_{key}"] = (two["pss_bytes"] - 2 * baseline) / max(one["pss_bytes"] - baseline, 1)
        print(
            f"memory ({key}): one process {one['pss_bytes'] / 2**20:.0f} MB, two {two['pss_bytes'] / 2**20:.0f} MB "
            f"({row[f'pss_ratio_{key}']:.2f}x; above the interpreter's {baseline / 2**20:.0f} MB each: "
            f"{row[f'pss_index_ratio_{key}']:.2f}x)",
            flush=True,
        )
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return row


def projection(rows: list[dict]) -> list[dict]:
    """Each figure at 21M passages, from the largest measured size."""
    big = max(rows, key=lambda r: r["passages"])
    factor = DPR_PASSAGES / big["passages"]
    out = []
    for key, how in (
        ("build_s", "linear in passages (measured rate; a real corpus has more distinct words: a lower bound)"),
        ("build_2proc_s", "linear in passages"),
        ("index_bytes", "linear in non-zeros (a real corpus's passages are as long: a measurement)"),
        ("save_s", "linear in bytes"),
        ("load_s_mmap", "guess: per-shard overhead, linear in shard count"),
        ("qps_term_major_1_thread", "inverse-linear in passages (posting lists grow with the corpus)"),
        ("qps_row_major_1_thread", "inverse-linear in passages"),
        ("bm25s_build_s", "linear in passages"),
        ("bm25s_qps_1_thread", "inverse-linear in passages"),
        ("pss_one_mmap", "guess: pages a search touches grow with the posting lists"),
    ):
        if key in big:
            value = big[key] / factor if "qps" in key else big[key] * factor
            out.append(
                {"figure": key, "measured_at": big["passages"], "measured": big[key], "at_21M": value, "basis": how}
            )
    return out


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000_000], help="corpus sizes; 9515 is the shared corpus as it is"
    )
    parser.add_argument("--queries", type=int, default=256, help="questions searched per measurement")
    parser.add_argument("--row-major-queries", type=int, default=64, help="fewer for the slow row-major path")
    parser.add_argument("--bm25s-max", type=int, default=5_000_000, help="largest corpus bm25s is built on")
    parser.add_argument("--skip-num-proc", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the saved indexes")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/scale.json"))
    args = parser.parse_args()

    corpus = read_jsonl(Path(args.data) / "corpus.jsonl.gz")
    args.questions = [row["question"] for row in read_jsonl(Path(args.data) / "nq_test.jsonl.gz")]
    model = load_retriever("all-minilm-l6-v2")
    queries = model.encode_query(args.questions[: args.queries], convert_to_sparse_tensor=False)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="r3hf-scale-"))
    os.environ["R3HF_CACHE"] = str(work / "cache")
    rows = [bench_size(size, corpus, model, queries, args, work) for size in args.sizes]
    report = {"machine": f"{os.cpu_count()} CPUs", "rows": rows, "projection_21M": projection(rows)}
    write_result(args.out, {**report, "args": {k: v for k, v in vars(args).items() if k != "questions"}})
    print(json.dumps(report["projection_21M"], indent=1))


if __name__ == "__main__":
    main()
