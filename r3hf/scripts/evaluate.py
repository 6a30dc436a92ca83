"""Evaluate retrievers for RAG: answer-recall@k and RAG accuracy (greedy generation with 1 and 10 passages).

    python recipes/evaluate.py --retrievers outputs/demo-r3-minilm all-minilm-l6-v2 bm25s \
        --dataset data/nq_test.jsonl.gz --corpus data/corpus.jsonl.gz --llm smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..data import load_qa_dataset, load_retriever, load_table, resolve_model_path
from ..evaluation import answer_recall_at_k, rag_accuracy
from ..index import BagOfTokensIndex


class BM25Retriever:
    """bm25s over an index's corpus (title + text, English stopwords), the baseline users pick first."""

    def __init__(self, corpus):
        import bm25s

        self._bm25s = bm25s
        self.corpus = corpus
        self.bm25 = bm25s.BM25()
        texts = [
            f"{t or ''} {x}"
            for t, x in zip(corpus["title"] if "title" in corpus.column_names else [""] * len(corpus), corpus["text"])
        ]
        self.bm25.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def retrieve_ids(self, questions: Sequence[str], k: int) -> list[list[int]]:
        tokens = self._bm25s.tokenize(list(questions), stopwords="en", show_progress=False)
        docs, _ = self.bm25.retrieve(tokens, k=min(k, len(self.corpus)), show_progress=False)
        return docs.tolist()


def retrieve_passages(
    retriever, questions: Sequence[str], index: BagOfTokensIndex, k: int, rerank_top_m: int = 20
) -> list[list[dict]]:
    """Top-`k` passages per question from a `SIDRModel` (late-parametric) or a [`BM25Retriever`]."""
    if isinstance(retriever, BM25Retriever):
        ids = retriever.retrieve_ids(questions, k)
    else:
        ids = retriever.retrieve(list(questions), index, k=k, rerank_top_m=max(k, rerank_top_m)).ids.tolist()
    return index.get_passages(ids)


def evaluate_retriever(
    retriever,
    index: BagOfTokensIndex,
    dataset,
    generator=None,
    ks: Sequence[int] = (1, 5, 20),
    contexts: Sequence[int] = (1,),
    rerank_top_m: int = 20,
    passages=None,
) -> dict[str, float]:
    """Answer-recall@k and, with a `generator` ([`AnswerProbabilityReward`]), RAG accuracy with the top `n`
    passages in context for each `n` in `contexts`. Pass `passages` to reuse a retrieval."""
    questions, answers = dataset["question"], dataset["answers"]
    depth = max([*ks, *contexts])
    passages = passages or retrieve_passages(retriever, questions, index, depth, rerank_top_m)
    metrics = answer_recall_at_k(passages, answers, ks)
    if generator is not None:
        for n in contexts:
            predictions = generator.generate(questions, [ps[:n] for ps in passages], show_progress_bar=True)
            metrics[f"rag_accuracy@{n}"] = rag_accuracy(predictions, answers)
    return metrics


def make_retriever(name: str, index: BagOfTokensIndex):
    return BM25Retriever(index.corpus) if name == "bm25s" else load_retriever(name)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retrievers", nargs="+", required=True, help="SIDR checkpoints, encoders, or 'bm25s'")
    parser.add_argument("--dataset", required=True, help="QA data: file or Hub dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--corpus", help="corpus file or Hub id (or --index)")
    parser.add_argument("--index", help="a saved bag-of-tokens index (folder or dataset repo)")
    parser.add_argument("--llm", default=None, help="reader LLM for RAG accuracy (path, Hub id or asset name)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--contexts", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--rerank-top-m", type=int, default=20)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--output", default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    if not args.corpus and not args.index:
        parser.error("pass --corpus or --index")
    dataset = load_qa_dataset(args.dataset, args.split, args.max_samples)
    generator = None
    if args.llm:
        from ..rewards import AnswerProbabilityReward

        generator = AnswerProbabilityReward(resolve_model_path(args.llm))
    results, index = {}, None
    for name in args.retrievers:
        if index is None:
            tokenizer = None if name == "bm25s" else load_retriever(name).tokenizer
            if args.index:
                index = BagOfTokensIndex.from_pretrained(args.index, tokenizer=tokenizer)
            else:
                if tokenizer is None:
                    parser.error("list a SIDR retriever before bm25s, or pass --index")
                index = BagOfTokensIndex.build(load_table(args.corpus), tokenizer)
        results[name] = evaluate_retriever(
            make_retriever(name, index),
            index,
            dataset,
            generator,
            args.ks,
            args.contexts if generator else (),
            args.rerank_top_m,
        )
        print(json.dumps({name: results[name]}))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results
