"""Closed-set tasks (PubHealth fact-checking, ARC-Challenge multiple choice): their Hub datasets mapped to one schema,
and the rule that matches a generation to a choice.

The schema: `question` (the text the prompt's `### Input:` holds: the claim, or the question followed by one
`A: ...` line per choice), `choices` (the labels the reader should answer with: `["true", "false"]` or
`["A", "B", "C", "D"]`) and `answers` (the gold choice's index).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import datasets

from .data import load_table

# PubHealth's four veracity labels (the Hub dataset's ClassLabel order) and what each becomes. Self-RAG evaluates
# PubHealth as true/false; "mixture" and "unproven" claims have no such answer and are left out.
PUBHEALTH_LABELS = ("false", "mixture", "true", "unproven")
PUBHEALTH_KEPT = {"false": 1, "true": 0}  # index into PUBHEALTH_CHOICES
PUBHEALTH_CHOICES = ["true", "false"]
ARC_LETTERS = "ABCDE"

TASKS = {
    "pubhealth": {"repo_id": "ImperialCollegeLondon/health_fact", "config_name": None},
    "arc_c": {"repo_id": "allenai/ai2_arc", "config_name": "ARC-Challenge"},
}


def _pubhealth_row(example: dict, source: str) -> dict:
    label = example["label"]
    if label == -1:  # ClassLabel's "no label": a few claims of the Hub dataset have none
        return {"question": example["claim"], "choices": PUBHEALTH_CHOICES, "answers": -1}
    if isinstance(label, int) and 0 <= label < len(PUBHEALTH_LABELS):
        label = PUBHEALTH_LABELS[label]
    if label not in PUBHEALTH_LABELS:
        raise ValueError(
            f"{source}: claim {example.get('claim_id', '?')!r} has label {example['label']!r}, not one of "
            f"{list(PUBHEALTH_LABELS)} (or their indices 0-3): is this the PubHealth dataset?"
        )
    return {"question": example["claim"], "choices": PUBHEALTH_CHOICES, "answers": PUBHEALTH_KEPT.get(label, -1)}


def _arc_row(example: dict, source: str) -> dict:
    labels, texts = list(example["choices"]["label"]), list(example["choices"]["text"])
    if len(labels) != len(texts):
        raise ValueError(
            f"{source}: question {example.get('id', '?')!r} has {len(labels)} choice labels for {len(texts)} texts."
        )
    # A few ARC questions number their choices 1-4 instead of A-D; the prompt names them A, B, C and D.
    letters = [ARC_LETTERS[int(x) - 1] if x.isdigit() else x for x in labels]
    if len(letters) > len(ARC_LETTERS) or any(x not in ARC_LETTERS for x in letters):
        raise ValueError(f"{source}: question {example.get('id', '?')!r} has choice labels {labels}, not A-E or 1-5.")
    key = example["answerKey"]
    key = ARC_LETTERS[int(key) - 1] if key.isdigit() else key
    if key not in letters:
        raise ValueError(
            f"{source}: question {example.get('id', '?')!r} has answerKey {example['answerKey']!r}, not one of its "
            f"choice labels {labels}."
        )
    lines = "\n".join(f"{letter}: {text}" for letter, text in zip(letters, texts))
    return {"question": f"{example['question']}\n{lines}", "choices": letters, "answers": letters.index(key)}


def load_closed_set_dataset(
    task: str,
    path_or_id: str | None = None,
    split: str = "train",
    max_rows: int | None = None,
    config_name: str | None = None,
) -> datasets.Dataset:
    """A closed-set task's dataset as `question`, `choices` and `answers` (the gold choice index).

    Args:
        task: `"pubhealth"` or `"arc_c"`.
        path_or_id: A local file, saved folder or Hub dataset id with the task's own columns (default: its Hub
            dataset, `ImperialCollegeLondon/health_fact` or `allenai/ai2_arc`).
        split: The split to load.
        max_rows: Keep the first rows only (before PubHealth's mixture and unproven claims are left out).
        config_name: The Hub configuration (default: `ARC-Challenge` for ARC).

    Returns:
        The mapped dataset. PubHealth keeps its true and false claims, as Self-RAG evaluates it (mixture, unproven
        and unlabelled claims are left out); an unknown label or answer key is an error that names the row.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown closed-set task {task!r}: choose one of {sorted(TASKS)}.")
    source = path_or_id or TASKS[task]["repo_id"]
    config_name = config_name or (TASKS[task]["config_name"] if path_or_id is None else None)
    table = load_table(source, split, max_rows, config_name)
    needed = {"pubhealth": {"claim", "label"}, "arc_c": {"question", "choices", "answerKey"}}[task]
    if not needed <= set(table.column_names):
        raise ValueError(f"{source} needs the {task} columns {sorted(needed)}; it has {table.column_names}.")
    to_row = _pubhealth_row if task == "pubhealth" else _arc_row
    mapped = table.map(lambda ex: to_row(ex, source), remove_columns=table.column_names)
    return mapped.filter(lambda ex: ex["answers"] >= 0) if task == "pubhealth" else mapped


_WORD = re.compile(r"[A-Za-z0-9]+")


def matched_choice(generation: str, choices: Sequence[str]) -> int | None:
    """The choice a generation gives: the first word of the generation (split at anything but letters and digits)
    that equals a choice label, case-insensitively, except that a one-letter label (`A`-`E`) counts only in upper
    case, so that the article "a" is not read as choice A. `None` when no word matches.
    """
    lookup = {}
    for i, choice in enumerate(choices):
        key = choice if len(choice) == 1 and choice in string.ascii_uppercase else choice.lower()
        lookup.setdefault(key, i)
    for word in _WORD.findall(generation):
        # the keys are upper-case one-letter labels and lower-case others: a word matches as written or lower-cased
        key = word if word in lookup else word.lower()
        if key in lookup:
            return lookup[key]
    return None
