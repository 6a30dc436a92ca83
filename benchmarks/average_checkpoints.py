"""Average the weights of retrievers trained from the same start (a uniform "model soup", Wortsman et al., 2022).

Each input is a saved [`SIDRModel`] folder, for instance the same run with several `--seed`s; the output is a
[`SIDRModel`] whose every parameter is the mean of theirs, saved with the first one's config and tokenizer.

    .venv/bin/python benchmarks/average_checkpoints.py outputs/soup3 outputs/bm25_negatives/r3_hybrid_long \\
        outputs/seed1/r3_hybrid_long outputs/seed2/r3_hybrid_long
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from r3hf import SIDRModel
from r3hf.utils import ArgumentParser


def average_checkpoints(paths: Sequence[str | Path]) -> SIDRModel:
    """The first retriever of `paths`, its parameters replaced by the mean of every retriever's."""
    models = [SIDRModel.from_pretrained(str(p)) for p in paths]
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise ValueError(f"{' '.join(map(str, paths))} do not share one architecture: average only same-start runs.")
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) for k, v in states[0].items()}
    models[0].load_state_dict(mean)
    return models[0]


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="at least two saved retrievers")
    args = parser.parse_args(argv)
    if len(args.checkpoints) < 2:
        parser.error("pass at least two checkpoints to average")
    average_checkpoints(args.checkpoints).save_pretrained(str(args.output_dir))
    print(f"Wrote the mean of {len(args.checkpoints)} retrievers to {args.output_dir}")


if __name__ == "__main__":
    main()
