"""Evaluate retrievers for RAG with one [`RAGEvaluator`]: answer-recall@k and RAG accuracy (greedy generation with the
top 1 and 10 passages), per-question results, and paired bootstrap intervals between every pair of retrievers.

    python recipes/evaluate.py --retrievers outputs/demo/r3 all-minilm-l6-v2 bm25s \
        --dataset data/nq_test.jsonl.gz --corpus data/corpus.jsonl.gz --llm smollm2-135m-instruct --output-dir out/eval
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence
from pathlib import Path

from transformers.utils import logging

from ..data import load_qa_dataset, load_table
from ..evaluation import RAGEvaluator, compare_predictions
from ..index import BagOfTokensIndex, BM25Retriever
from ..models import load_retriever, resolve_model_path
from ..rewards import Reader
from ..utils import ArgumentParser, atomic_write_text
from . import add_first_stage_arguments

logger = logging.get_logger(__name__)


def compare_all(predictions: dict[str, list[dict]], metrics: Sequence[str]) -> dict[str, dict]:
    """Paired bootstrap differences (`a - b`) of per-question metrics for every ordered pair of retrievers."""
    return {
        f"{a} - {b}": {m: compare_predictions(predictions[a], predictions[b], m) for m in metrics}
        for a, b in itertools.combinations(predictions, 2)
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrievers", nargs="+", required=True, help="SIDR checkpoints, encoders, or 'bm25s'")
    parser.add_argument("--dataset", required=True, help="QA data: file or Hub dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--corpus", help="corpus file or Hub id (or --index)")
    parser.add_argument("--index", help="a saved bag-of-tokens index (folder or dataset repo)")
    parser.add_argument("--llm", default=None, help="reader LLM for RAG accuracy (path, Hub id or asset name)")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="reader's greedy generation length")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--rerank-top-m", type=int, default=20)
    add_first_stage_arguments(parser)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--output-dir", default=None, help="write metrics, per-question results and comparisons here")
    args = parser.parse_args(argv)
    if not args.corpus and not args.index:
        parser.error("pass --corpus or --index")
    if args.retrievers[0] == "bm25s" and not args.index:
        parser.error("list a SIDR retriever before bm25s (its tokenizer builds the index), or pass --index")
    dataset = load_qa_dataset(args.dataset, args.split, args.max_samples)
    reader = Reader(resolve_model_path(args.llm), max_new_tokens=args.max_new_tokens) if args.llm else None
    index = evaluator = None
    results, predictions = {}, {}
    for name in args.retrievers:
        retriever = None if name == "bm25s" else load_retriever(name)
        if index is None:
            tokenizer = retriever.tokenizer if retriever is not None else None
            if args.index:
                index = BagOfTokensIndex.from_pretrained(args.index, tokenizer=tokenizer)
            else:
                index = BagOfTokensIndex.build(load_table(args.corpus), tokenizer)
            if args.first_stage != "bag_of_tokens" and index.bm25 is None:
                index.add_bm25()
            evaluator = RAGEvaluator.from_dataset(
                dataset,
                index,
                reader=reader,
                recall_at=args.ks,
                rag_contexts=args.contexts,
                rerank_top_m=args.rerank_top_m,
                first_stage=args.first_stage,
                fusion=args.fusion,
                fusion_weight=args.fusion_weight,
                show_progress_bar=True,
            )
        predictions[name] = evaluator.predict(retriever or index.bm25 or BM25Retriever(index))
        results[name] = evaluator.compute_metrics(predictions[name])
        logger.info(f"{name}: {json.dumps(results[name])}")
    metrics = [f"correct@{n}" for n in evaluator.rag_contexts] + [f"recall@{k}" for k in evaluator.recall_at]
    report = {
        "metrics": results,
        "paired_differences": compare_all(predictions, metrics) if len(predictions) > 1 else {},
    }
    if args.output_dir:
        out = Path(args.output_dir)
        for i, (name, records) in enumerate(predictions.items()):
            atomic_write_text(
                out / f"predictions_{i}.jsonl", "".join(json.dumps({"retriever": name, **r}) + "\n" for r in records)
            )
        atomic_write_text(out / "results.json", json.dumps(report, indent=2))
    return report
