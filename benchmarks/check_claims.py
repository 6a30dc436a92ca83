"""Check every claim of `benchmarks/claims.yaml` against its run files: OK, FAIL or MISSING per claim.

A claim is a command and the numbers it produced. The headline claims keep their per-question files in the tree
(`run:`); their metrics and paired bootstrap intervals are computed again from those files. Every other claim names a
results file that left the tree, read from the claims file's `archive` commit with `git show`. Exit status 1 when a
claim fails, 0 otherwise (MISSING is not a failure: a shallow clone lacks the archive).

    .venv/bin/python benchmarks/check_claims.py                 # check every claim
    .venv/bin/python benchmarks/check_claims.py --run demo_default   # run README command 1, then check its output
    .venv/bin/python benchmarks/check_claims.py --markdown      # the tables the docs show, from the claims
"""

from __future__ import annotations

import argparse
import gzip
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from r3hf import compare_predictions

ROOT = Path(__file__).resolve().parent.parent
CLAIMS = ROOT / "benchmarks" / "claims.yaml"
CLAIMS_PAGE = ROOT / "docs" / "benchmarks" / "claims.md"
METRICS = {"rag_accuracy@1": "correct@1", "answer_recall@1": "recall@1"}


def load_claims(path: Path = CLAIMS) -> dict:
    """The claims file, with every claim id checked to be unique."""
    claims = yaml.safe_load(path.read_text())
    ids = [c["id"] for c in claims["claims"]]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: claim ids must be unique, got {ids}.")
    return claims


def tolerance(expected: float) -> float:
    """Half a unit of the last digit written: 0.018 → 0.0005, 1003 → 0.5, 2.9e-7 → 5e-9."""
    mantissa, _, exponent = repr(expected).partition("e")
    decimals = len(mantissa.split(".")[1].rstrip("0")) if "." in mantissa else 0
    return 0.5 * 10 ** (int(exponent or 0) - decimals)


def matches(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= tolerance(expected) + 1e-12


def read_archived(relative: str, commit: str) -> dict | None:
    """A results file from the tree if it is there, else from `commit`; `None` where neither holds it."""
    path = ROOT / relative
    if path.exists():
        return json.loads(path.read_text())
    try:
        shown = subprocess.run(
            ["git", "show", f"{commit}:{relative}"], cwd=ROOT, capture_output=True, check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return json.loads(shown.stdout)


def read_predictions(folder: Path, retriever: str, test_set: str) -> list[dict] | None:
    """A retriever's per-question results (`<retriever without spaces>/<set>_predictions.jsonl[.gz]`)."""
    stem = folder / "predictions" / retriever.replace(" ", "") / f"{test_set}_predictions.jsonl"
    for path, opener in ((stem.with_name(stem.name + ".gz"), gzip.open), (stem, open)):
        if path.exists():
            with opener(path, "rt", encoding="utf-8") as f:
                return [json.loads(line) for line in f]
    return None


def metric(records: list[dict], name: str) -> float:
    per_question = METRICS[name]
    if per_question.startswith("recall@"):
        k = int(per_question.split("@")[1])
        return sum(r["first_answer_rank"] is not None and r["first_answer_rank"] < k for r in records) / len(records)
    return sum(bool(r[per_question]) for r in records) / len(records)


def check_run(claim: dict, folder: Path) -> tuple[list[str], list[str]]:
    """Failures and missing files of a claim whose per-question files are in `folder`."""
    failures, missing, cache = [], [], {}

    def records(retriever: str, test_set: str) -> list[dict] | None:
        if (retriever, test_set) not in cache:
            cache[retriever, test_set] = read_predictions(folder, retriever, test_set)
            if cache[retriever, test_set] is None:
                missing.append(f"{folder}/predictions/{retriever.replace(' ', '')}/{test_set}")
        return cache[retriever, test_set]

    for test_set, by_retriever in claim.get("metrics", {}).items():
        for retriever, expected in by_retriever.items():
            if (rows := records(retriever, test_set)) is None:
                continue
            for name, value in expected.items():
                if not matches(actual := metric(rows, name), value):
                    failures.append(f"{test_set} {retriever} {name}: {actual:.4f}, expected {value}")
    for test_set, pairs in claim.get("pairs", {}).items():
        for pair, expected in pairs.items():
            a, b = pair.split(" - ")
            if (rows_a := records(a, test_set)) is None or (rows_b := records(b, test_set)) is None:
                continue
            got = compare_predictions(rows_a, rows_b, "correct@1")
            actual = [got["difference"], got["low"], got["high"]]
            if not all(map(matches, actual, expected)):
                failures.append(f"{test_set} {pair}: {[round(x, 4) for x in actual]}, expected {expected}")
    return failures, missing


def lookup(report: dict, key: Sequence) -> float:
    value = report
    for part in key:
        value = value[int(part)] if isinstance(value, list) else value[str(part)]
    return value


def check_values(claim: dict, archive: str) -> tuple[list[str], list[str]]:
    """Failures and missing files of a claim whose numbers are read from results files."""
    failures, missing = [], []
    commit = claim.get("commit", archive)  # a claim made after the archive names the commit that holds its file
    for item in claim["values"]:
        report = read_archived(item["file"], commit)
        if report is None:
            missing.append(f"{item['file']} (at {commit[:8]})")
            continue
        try:
            found = lookup(report, item["key"])
        except (KeyError, IndexError, TypeError):
            failures.append(f"{item['file']} has no {item['key']}")
            continue
        if "interval" in item:
            actual, expected = [found["difference"], found["low"], found["high"]], item["interval"]
            ok = all(map(matches, actual, expected))
        else:
            actual, expected = found, item["value"]
            ok = matches(actual, expected)
        if not ok:
            failures.append(f"{item['label']}: {actual}, expected {expected}")
    return failures, missing


def check(claim: dict, archive: str, folder: Path | None = None) -> tuple[str, list[str]]:
    """`("OK" | "FAIL" | "MISSING", details)` of one claim; `folder` replaces a headline claim's `run` folder."""
    if "run" in claim:
        failures, missing = check_run(claim, folder or ROOT / claim["run"])
    else:
        failures, missing = check_values(claim, archive)
    if failures:
        return "FAIL", failures
    return ("MISSING", missing) if missing else ("OK", [])


def points(share: float) -> str:
    """A share as signed points with one decimal, a true minus sign for negatives: 0.04 → '+4.0'."""
    text = f"{100 * share:+.1f}"
    return text.replace("-", "−") if text != "-0.0" else "+0.0"


def interval(values: Sequence[float]) -> str:
    difference, low, high = values
    return f"{points(difference)} [{points(low)}, {points(high)}]"


def headline_table(claim: dict) -> str:
    """The README's table of paired differences, from a headline claim's `table` rows."""
    sets = list(claim["pairs"])
    lines = [f"| difference (retriever @ pipeline) | {' | '.join(sets)} |", f"|---{'|---' * len(sets)}|"]
    for row in claim["table"]:
        cells = " | ".join(interval(claim["pairs"][s][row["pair"]]) for s in sets)
        lines.append(f"| {row['label']} | {cells} |")
    return "\n".join(lines)


def markdown(claims: dict) -> str:
    """The claims page: per claim its command and its numbers."""
    out = [
        "# Claims",
        "",
        "<!-- Generated by `python benchmarks/check_claims.py --markdown`; edit benchmarks/claims.yaml instead. -->",
        "",
        "Every number the README and these pages state, with the command that produces it. "
        "`python benchmarks/check_claims.py` re-derives each from its run files and prints OK, FAIL or MISSING; "
        f"files that left the tree are read from commit `{claims['archive'][:12]}`.",
    ]
    for claim in claims["claims"]:
        out += ["", f"## {claim['title']}", "", f"`{claim['command']}`", ""]
        if "run" in claim:
            out += [f"Run files: `{claim['run']}/` (per question).", ""]
            if "table" in claim:
                out += [headline_table(claim), ""]
            sets = list(claim["metrics"])
            out += [
                f"| retriever @ pipeline | {' | '.join(f'{s} RAG acc@1 | {s} recall@1' for s in sets)} |",
                f"|---{'|---' * 2 * len(sets)}|",
            ]
            for retriever in claim["metrics"][sets[0]]:
                cells = " | ".join(f"{100 * claim['metrics'][s][retriever][m]:.1f}" for s in sets for m in METRICS)
                out.append(f"| {retriever} | {cells} |")
        else:
            out += ["| number | value | results file |", "|---|---|---|"]
            for item in claim["values"]:
                value = interval(item["interval"]) + " points" if "interval" in item else f"{item['value']}"
                out.append(f"| {item['label']} | {value} | `{item['file']}` |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", type=Path, default=CLAIMS, help="the claims file")
    parser.add_argument("--run", metavar="ID", help="run this claim's command, then check the files it wrote")
    parser.add_argument("--markdown", action="store_true", help="print the claims page (docs/benchmarks/claims.md)")
    args = parser.parse_args(argv)
    claims = load_claims(args.claims)
    if args.markdown:
        print(markdown(claims), end="")
        return 0
    selected = claims["claims"]
    if args.run:
        selected = [c for c in selected if c["id"] == args.run]
        if not selected:
            parser.error(f"--run {args.run}: no such claim; choose one of {[c['id'] for c in claims['claims']]}")
        subprocess.run(shlex.split(selected[0]["command"].split(" (")[0]), cwd=ROOT, check=True)
    failed = False
    for claim in selected:
        folder = ROOT / claim["output"] if args.run and "output" in claim else None
        status, details = check(claim, claims["archive"], folder)
        failed |= status == "FAIL"
        print(f"{status:8} {claim['id']}: {claim['title']}")
        for line in details:
            print(f"         {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
