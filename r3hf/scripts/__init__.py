"""The code behind the recipes and the `r3hf` command, and the arguments they share."""

from __future__ import annotations

import argparse


def add_first_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """`--first-stage`, `--fusion` and `--fusion-weight`, as [`r3hf.retrieval.retrieve`] takes them."""
    from ..retrieval import FIRST_STAGES, FUSIONS

    parser.add_argument(
        "--first-stage", default="bag_of_tokens", choices=FIRST_STAGES, help="where candidates come from"
    )
    parser.add_argument(
        "--fusion", default="none", choices=FUSIONS, help="final ranking: E(q)·E(d) or its fusion with bm25s"
    )
    parser.add_argument(
        "--fusion-weight", type=float, default=0.5, help="dense weight of a 'weighted' or 'score' fusion"
    )
