"""Every R3 (hybrid) − initial (hybrid) difference the demo pages report, in one table and one plot.

The issue's second target asks training inside the hybrid pipeline to add at least 3 RAG accuracy@1 points over the
initial retriever in that pipeline, with an interval above 0, on one test set. The demo's pages try many training and
fusion variants for it, each in its own section. This reads the result files those sections wrote (it computes no
new difference), and lists each trained retriever's difference from the initial one, both in the hybrid pipeline, on
the same 500 + 500 test questions, with the section that explains it. Prints a Markdown table; `--out` also writes
JSON and, beside it, a plot of the differences against the target.

    .venv/bin/python benchmarks/hybrid_variants.py --out benchmarks/results/hybrid_variants.json
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from r3hf.scripts.utils import write_result
from r3hf.utils import ArgumentParser

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks" / "demo.md"
VARIANTS_PAGE = PAGE.with_name("demo_variants.md")
TEST_SETS = ("nq_test", "squad_test")
TARGET = 0.03
INITIAL_OWN_DEV = "benchmarks/results/fusion_dev/initial@hybrid_own_dev"
INITIAL_POOLED_DEV = "benchmarks/results/fusion_dev/initial@hybrid_pooled_dev"


class Variant(NamedTuple):
    """One reported difference: what was trained, how the fusions were chosen, the docs section on it, the
    result file (relative to `benchmarks/results/`) and the pair's key in it."""

    label: str
    fusion: str
    section: str
    file: str
    pair: str


POOLED = "pooled dev, recall@1"
OWN = "own dev, recall@1"
STEP8 = "r3_hybrid step 8 @ hybrid - initial @ hybrid"
VARIANTS = (
    Variant("the 500 + 500 run: 8 on-policy steps", POOLED, "500 + 500 questions", "demo_500/results.json",
            "r3_hybrid @ hybrid - initial @ hybrid"),
    Variant("24 on-policy steps", POOLED, "A longer on-policy stage in the hybrid pipeline", "online_steps.json",
            "r3_hybrid step 24 @ hybrid - initial @ hybrid"),
    Variant("the reader's own answer as reward", POOLED, "The exact reward: the reader's own answer",
            "online_generation_reward.json", STEP8),
    Variant("own-answer reward, top 10, no fallback positives", POOLED, "Only real rewards, from the top 10",
            "online_top10_skip.json", "r3_hybrid step 12 @ hybrid - initial @ hybrid"),
    Variant("the same, learning rate 5e-5", POOLED, "Only real rewards, from the top 10",
            "online_top10_skip_lr5e-5.json", "r3_hybrid step 12 @ hybrid - initial @ hybrid"),
    Variant("hybrid offline labels: 240 questions × top 10", POOLED,
            "Larger offline pools, labelled in the hybrid pipeline", "online_hybrid_pools.json", STEP8),
    Variant("hybrid offline labels: 720 questions × top 3", POOLED,
            "Three times the reader-labelled questions, top 3", "online_hybrid_pools_720.json", STEP8),
    Variant("stage 1 on the 720 labelled questions alone", POOLED, "Stage 1 on the reader-labelled questions alone",
            "online_pooled_720.json", STEP8),
    Variant("a three times longer stage 1", POOLED, "A three times longer stage 1", "online_all_720_180.json", STEP8),
    Variant("bm25s hard negatives in stage 1 (seed 0)", POOLED,
            "The RAG run: stage 1 and stage 2 with bm25s's negatives", "online_bm25_negatives.json", STEP8),
    Variant("bm25s hard negatives, stage 1 twice as long", POOLED, "Twice as long a stage 1 with bm25s's negatives",
            "online_bm25_negatives_120.json", STEP8),
    *(
        Variant(f"bm25s hard negatives, seed {seed}", POOLED, section, f"online_bm25_negatives_seed{seed}.json", STEP8)
        for seed, section in ((1, "Two more training seeds"), (2, "Two more training seeds"),
                              (3, "Five seeds in one interval"), (4, "Five seeds in one interval"))
    ),
    Variant("bm25s hard negatives, seeds 0–4 (their mean)", POOLED, "Five seeds in one interval",
            "seeds5_pooled_dev_pairs.json", INITIAL_POOLED_DEV),
    Variant("bm25s hard negatives, trained in that pipeline", "pooled dev, RAG accuracy@1",
            "Each fusion chosen by the reader's answers", "online_rag_fusion.json", STEP8),
    Variant("bm25s hard negatives (seed 0)", OWN, "Each test set's fusion chosen on its own dev split",
            "fusion_dev.json", "r3_hybrid - initial, both on own dev"),
    Variant("bm25s hard negatives (seed 0)", "own dev, 200 questions per set",
            "Twice the dev questions: all 200 of nq_dev, and 200 of squad_dev", "fusion_dev_200.json",
            "r3_hybrid - initial, both on own dev"),
    *(
        Variant(f"bm25s hard negatives, seed {seed}", OWN, section, file, f"r3_hybrid_seed{seed} - initial, both on own dev")
        for seed, section, file in (
            (1, "Three training seeds, each test set's fusion on its own dev split", "fusion_dev_seeds.json"),
            (2, "Three training seeds, each test set's fusion on its own dev split", "fusion_dev_seeds.json"),
            (3, "Five seeds in one interval", "fusion_dev_seeds34.json"),
            (4, "Five seeds in one interval", "fusion_dev_seeds34.json"),
        )
    ),
    Variant("bm25s hard negatives, seeds 0–4 (their mean)", OWN, "Five seeds in one interval",
            "seeds5_own_dev_pairs.json", INITIAL_OWN_DEV),
    Variant("the weights of seeds 0–2 averaged", OWN, "The three seeds' weights averaged", "fusion_dev_soup3.json",
            "soup3 - initial, both on own dev"),
    *(
        Variant(f"bm25s hard negatives, seed {seed}", "pooled dev, bm25s's scores fused",
                "bm25s's scores in the fusion, not its ranks", "fusion_dev_score.json", f"{name} - initial, both on pooled dev")
        for seed, name in ((0, "r3_hybrid"), (1, "r3_hybrid_seed1"), (2, "r3_hybrid_seed2"))
    ),
    Variant("trained inside the score-fusion pipeline", "pooled dev, bm25s's scores fused",
            "Training inside the score-fusion pipeline", "online_score_fusion.json", STEP8),
    Variant("nq's training questions alone", POOLED, "One retriever per dataset: nq's training questions alone",
            "online_nq_only.json", STEP8),
    Variant("nq's training questions alone", OWN, "One retriever per dataset: nq's training questions alone",
            "fusion_dev_nq_only.json", "r3_hybrid_nq - initial, both on own dev"),
    Variant("bm25s's score in the loss, β = 2.33", POOLED, "bm25s's score in the training loss",
            "online_bm25_residual.json", STEP8),
    Variant("bm25s's score in the loss, β = 0.5", POOLED, "bm25s's score in the training loss",
            "online_bm25_residual_0.5.json", STEP8),
    Variant("1,440 labelled questions × top 2, stage 1 on them", POOLED,
            "Twice as many reader-labelled questions, stage 1 on them alone", "online_labels_1440.json", STEP8),
    Variant("2,880 labelled questions × top 2, stage 1 on them", POOLED,
            "Twice as many again: 2,880 reader-labelled questions", "online_labels_2880.json", STEP8),
    Variant("1,440 labelled questions × top 4, stage 1 on them", POOLED,
            "Deeper labels: the same 1,440 questions, top 4", "online_labels_1440_top4.json", STEP8),
)  # fmt: skip


def anchor(section: str) -> str:
    """The anchor of a section heading, as mkdocs makes it."""
    from markdown.extensions.toc import slugify

    return slugify(section, "-")


@functools.cache
def headings(page: Path) -> list[str]:
    """The section headings of a Markdown page (read once per run)."""
    return [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]


def link(section: str) -> str:
    """The demo page's link to a section: on the page itself, or on the variants page beside it."""
    if section in headings(PAGE):
        return f"#{anchor(section)}"
    if section in headings(VARIANTS_PAGE):
        return f"{VARIANTS_PAGE.name}#{anchor(section)}"
    raise ValueError(f"No section '{section}' on {PAGE} or {VARIANTS_PAGE}: name one of their headings.")


def differences(variant: Variant, results: Path = RESULTS) -> dict[str, dict]:
    """The variant's RAG accuracy@1 difference per test set, each `{"difference", "low", "high", "n"}` as shares,
    read from its result file: a demo or benchmark run's `paired_differences`, or a `compare_runs.py` file."""
    path = results / variant.file
    if not path.is_file():
        raise FileNotFoundError(f"No result file {path}: run the command of the docs section '{variant.section}'.")
    by_set = json.loads(path.read_text())["results"]
    out = {}
    for test_set in TEST_SETS:
        if test_set not in by_set:
            raise KeyError(f"{path} has no results for {test_set}: it holds {', '.join(by_set)}.")
        pairs = by_set[test_set].get("paired_differences", by_set[test_set])
        if variant.pair not in pairs:
            raise KeyError(f"{path} has no pair '{variant.pair}' for {test_set}; it has: {', '.join(pairs)}.")
        out[test_set] = pairs[variant.pair]["correct@1"]
    return out


def points(share: float) -> str:
    """A share as signed points, with the page's minus sign: one decimal, two where one would round a nonzero value
    to 0.0."""
    value = 100 * share
    if abs(value) < 1e-7:
        return "+0.0"
    return (f"{value:+.2f}" if abs(value) < 0.05 else f"{value:+.1f}").replace("-", "−")


def collect(results: Path = RESULTS) -> list[dict]:
    """Every variant with its difference per test set."""
    return [{**variant._asdict(), **differences(variant, results)} for variant in VARIANTS]


def summary(rows: Sequence[dict]) -> dict:
    """How many differences reach the target, have an interval above 0, and the largest, per test set."""
    out = {}
    for name in TEST_SETS:
        best = max(rows, key=lambda row: row[name]["difference"])
        out[name] = {
            "differences": len(rows),
            "at_least_target": sum(row[name]["difference"] >= TARGET - 1e-9 for row in rows),
            "interval_above_0": sum(row[name]["low"] > 0 for row in rows),
            "target_met": sum(row[name]["difference"] >= TARGET - 1e-9 and row[name]["low"] > 0 for row in rows),
            "largest": {"label": best["label"], "fusion": best["fusion"], **best[name]},
        }
    return out


def table(rows: Sequence[dict]) -> str:
    """The differences as a Markdown table for the demo page, each row linked to the section that explains it."""
    lines = [
        "| trained retriever | fusion chosen on | nq_test | squad_test | section |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{points(row[n]['difference'])} [{points(row[n]['low'])}, {points(row[n]['high'])}]" for n in TEST_SETS
        ]
        lines.append(
            f"| {row['label']} | {row['fusion']} | {' | '.join(cells)} | [{row['section']}]({link(row['section'])}) |"
        )
    return "\n".join(lines)


def ceiling(results: Path = RESULTS) -> dict[str, float] | None:
    """Per test set, what a perfect re-ranking of the initial retriever's top 4 hybrid passages would add over it
    (`bench_rerank_ceiling.py`), or None where that was not measured."""
    path = results / "rerank_ceiling.json"
    if not path.is_file():
        return None
    by_set = json.loads(path.read_text())["results"]
    return {name: by_set[name]["initial"]["oracle_minus_top1"]["difference"] for name in TEST_SETS if name in by_set}


def plot(rows: Sequence[dict], path: Path, best_reranking: dict[str, float] | None = None) -> None:
    """Each difference with its interval, one panel per test set, against 0, the target and, where given, what a
    perfect re-ranking of the top 4 would add."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TEST_SETS), figsize=(13, 1.5 + 0.3 * len(rows)), sharey=True)
    labels = [f"{row['label']} ({row['fusion']})" for row in rows]
    for ax, name in zip(axes, TEST_SETS):
        for y, row in enumerate(rows):
            d = {k: 100 * row[name][k] for k in ("difference", "low", "high")}
            above = d["low"] > 0
            ax.errorbar(
                d["difference"],
                y,
                xerr=[[d["difference"] - d["low"]], [d["high"] - d["difference"]]],
                fmt="o",
                capsize=2,
                color="tab:green" if above else "tab:blue",
            )
        ax.axvline(0, color="grey", lw=0.8)
        ax.axvline(100 * TARGET, color="tab:red", ls="--", lw=1, label="target: +3")
        if best_reranking and name in best_reranking:
            ax.axvline(
                100 * best_reranking[name], color="black", ls=":", lw=1, label="perfect re-ranking of the top 4"
            )
        ax.set_title(name)
        ax.legend(loc="lower right", fontsize=7)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.supxlabel("R3 (hybrid) − initial (hybrid), RAG accuracy@1 (points, paired 95% interval)")
    fig.suptitle("Every trained retriever against the initial one in the hybrid pipeline (green: interval above 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder the result files are in")
    parser.add_argument("--out", type=Path, help="also write the differences here (JSON), and a plot beside it")
    args = parser.parse_args(argv)
    rows = collect(args.results)
    report = {"target": TARGET, "perfect_reranking": ceiling(args.results), "summary": summary(rows), "variants": rows}
    print(table(rows))
    for name, s in report["summary"].items():
        largest = s["largest"]
        print(
            f"{name}: {s['differences']} differences, {s['interval_above_0']} with an interval above 0, "
            f"{s['at_least_target']} at +3 or more, {s['target_met']} meeting the target; largest "
            f"{points(largest['difference'])} [{points(largest['low'])}, {points(largest['high'])}] "
            f"({largest['label']}, {largest['fusion']})"
        )
    if args.out:
        write_result(args.out, report)
        plot(rows, args.out.with_suffix(".png"), report["perfect_reranking"])
    return report


if __name__ == "__main__":
    main()
