"""How much of the demo's recall the first stage allows: answer recall@m of E(q)·T(d) alone, before re-ranking.

Late-parametric search re-ranks only the top `m` passages of the bag-of-tokens search, so the first stage's recall@m
caps the pipeline's recall at every rank (the demo uses m = 10). This measures that cap for the initial MiniLM-SIDR and
trained retrievers (saved by `recipes/demo.py`), next to bm25s's recall, on the demo's test questions (each test set
shuffled with seed 0), with paired bootstrap 95% intervals of the differences; no reader, no passage embeddings.

Then, on the first `--rerank-samples` of those questions, the full late-parametric pipeline at each re-rank depth of
`--rerank-depths` (passages of the deepest first-stage list embedded once per retriever, each depth re-ranking its
prefix): what a larger m would buy, at the price of embedding more passages per question.

    python benchmarks/bench_first_stage.py --retriever initial=all-minilm-l6-v2 \\
        --retriever r3=outputs/demo/r3 --out benchmarks/results/first_stage.json
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from r3hf import BM25Retriever, RAGEvaluator, compare_predictions
from r3hf.data import load_qa_dataset
from r3hf.evaluation import first_answer_rank
from r3hf.scripts.utils import DATA, demo_index, demo_retriever, write_result
from r3hf.utils import ArgumentParser

ROOT = Path(__file__).resolve().parents[1]


def recall(records: list[dict], k: int) -> float:
    return sum(r["first_answer_rank"] is not None and r["first_answer_rank"] < k for r in records) / len(records)


class FirstStage:
    """A retriever that stops after E(q)·T(d): the candidates late-parametric search would re-rank."""

    def __init__(self, model):
        self.model = model

    def retrieve(self, queries, index, k: int = 10, rerank_top_m: int = 100, **kwargs):
        """`kwargs`: the pipeline arguments of late-parametric retrievers, not used by a first stage alone."""
        return index.search(self.model.encode_query(queries, convert_to_sparse_tensor=False), k=k)


def rerank_depths(model, index, questions, answers, ids, depths: list[int]) -> dict[int, list[dict]]:
    """Per depth m, per question: the rank of the first answer after re-ranking the first stage's top m by E(q)·E(d)."""
    query_embeds = model.encode_query(questions, convert_to_sparse_tensor=False)
    candidates = index.search(query_embeds, k=max(depths)).rows
    unique, inverse = candidates.unique(return_inverse=True)
    passage_embeds = model.encode_document(index.get_passages(unique.tolist()), convert_to_sparse_tensor=False)
    scores = (query_embeds @ passage_embeds.T).gather(1, inverse)
    out = {}
    for m in depths:
        order = scores[:, :m].sort(dim=1, descending=True, stable=True).indices
        ranked = candidates[:, :m].gather(1, order).tolist()
        out[m] = [
            {"id": i, "first_answer_rank": first_answer_rank(index.get_passages(r), a)}
            for i, r, a in zip(ids, ranked, answers)
        ]
    return out


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument(
        "--retriever",
        action="append",
        required=True,
        help="label=name_or_path (repeatable); the first is the reference",
    )
    parser.add_argument("--eval-samples", type=int, default=500, help="questions per test set")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 5, 10, 20, 50, 100])
    parser.add_argument("--rerank-depths", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--rerank-samples", type=int, default=150, help="questions per test set for the re-rank sweep")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/first_stage.json"))
    args = parser.parse_args()

    if any("=" not in spec for spec in args.retriever):
        parser.error("--retriever takes label=name_or_path, e.g. --retriever r3=outputs/demo/r3")
    retrievers = dict(spec.split("=", 1) for spec in args.retriever)
    models = {label: demo_retriever(path) for label, path in retrievers.items()}
    index = demo_index(next(iter(models.values())), args.data)
    report = {"args": vars(args), "results": {}}
    for name in ("nq_test", "squad_test"):
        tests = load_qa_dataset(str(Path(args.data) / f"{name}.jsonl.gz")).shuffle(seed=0)
        tests = tests.select(range(min(args.eval_samples, len(tests))))
        evaluator = RAGEvaluator.from_dataset(tests, index, recall_at=args.depths, name=name)
        records = {f"{label} E(q)·T(d)": evaluator.predict(FirstStage(model)) for label, model in models.items()}
        records["bm25s"] = evaluator.predict(BM25Retriever(index))
        metrics = {label: evaluator.compute_metrics(r) for label, r in records.items()}
        pairs = {  # later minus earlier: "r3 - initial"
            f"{b} - {a}": {f"recall@{d}": compare_predictions(records[b], records[a], f"recall@{d}") for d in (1, 10)}
            for a, b in itertools.combinations(records, 2)
        }
        report["results"][name] = {"questions": len(tests), "metrics": metrics, "paired_differences": pairs}
        sweep = tests.select(range(min(args.rerank_samples, len(tests))))
        reranked = {
            label: rerank_depths(model, index, sweep["question"], sweep["answers"], sweep["id"], args.rerank_depths)
            for label, model in models.items()
        }
        rates = {
            label: {m: {f"recall@{c}": recall(r, c) for c in (1, 5)} for m, r in by_m.items()}
            for label, by_m in reranked.items()
        }
        low, high = min(args.rerank_depths), max(args.rerank_depths)
        sweep_pairs = {
            f"{label} m={high} - m={low}": compare_predictions(by_m[high], by_m[low], "recall@1")
            for label, by_m in reranked.items()
        }
        labels = list(reranked)
        for m in args.rerank_depths:
            for a, b in itertools.combinations(labels, 2):
                sweep_pairs[f"{b} - {a}, m={m}"] = compare_predictions(reranked[b][m], reranked[a][m], "recall@1")
        report["results"][name]["rerank_sweep"] = {
            "questions": len(sweep),
            "answer_recall": rates,
            "paired_differences_recall@1": sweep_pairs,
        }
        print(f"\n{name}, first {len(sweep)} questions: late-parametric answer recall@1 / @5 by re-rank depth m")
        for label, by_m in rates.items():
            print(
                f"{label}: "
                + ", ".join(f"m={m} {100 * r['recall@1']:.1f} / {100 * r['recall@5']:.1f}" for m, r in by_m.items())
            )
        for pair, v in sweep_pairs.items():
            print(f"{pair}: recall@1 {100 * v['difference']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]")
        print(f"\n{name} ({len(tests)} questions): answer recall@m of the first stage (bm25s: its own ranking)")
        print("| retriever | " + " | ".join(f"@{d}" for d in args.depths) + " |")
        print("|---|" + "---|" * len(args.depths))
        for label, m in metrics.items():
            print(
                f"| {label} | " + " | ".join(f"{100 * m[f'{name}_answer_recall@{d}']:.1f}" for d in args.depths) + " |"
            )
        for pair, d in pairs.items():
            print(
                f"{pair}: "
                + ", ".join(
                    f"{metric} {100 * v['difference']:+.1f} [{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]"
                    for metric, v in d.items()
                )
            )
    write_result(args.out, report)
    print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
