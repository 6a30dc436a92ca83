"""Prompts of the reader: the OpenRAG open-QA template, its chat-turn twin, and how passages are laid out."""

from __future__ import annotations

from collections.abc import Sequence

# Self-RAG / OpenRAG open-QA prompt (OpenRAG App. H), for base models.
OPENQA_PROMPT = "### Paragraph:\n{paragraphs}\n### Instruction:\n{question}\n### Response:\n"
# The same content as a user turn, for instruct models with a chat template.
CHAT_PROMPT = "Answer the question using the paragraph. Reply with the answer only.\n\nParagraph:\n{paragraphs}\n\nQuestion: {question}"


def format_paragraphs(passages: Sequence) -> str:
    """`[1] title\\ntext` blocks, one per passage (strings or `{"title","text"}` dicts)."""
    blocks = []
    for i, p in enumerate(passages, 1):
        if isinstance(p, str):
            blocks.append(f"[{i}] {p}")
        else:
            title = p.get("title") or ""
            blocks.append(f"[{i}] {title}\n{p['text']}" if title else f"[{i}] {p['text']}")
    return "\n".join(blocks)


# OpenRAG's closed-set prompts (App. H): the Alpaca preamble, the passage, the task's instruction, the input (the claim,
# or the question with one "A: ..." line per choice).
_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
)
PUBHEALTH_PROMPT = (
    _PREAMBLE
    + "### Paragraph:\n{paragraphs}\n### Instruction:\nIs the following statement correct or not? Say true if "
    "it's correct; otherwise say false.\n### Input:\n{question}\n### Response:\n"
)
ARC_PROMPT = (
    _PREAMBLE
    + "### Paragraph:\n{paragraphs}\n### Instruction:\nGiven four answer candidates, A, B, C and D, choose the "
    "best answer choice.\n### Input:\n{question}\n### Response:\n"
)
CLOSED_SET_PROMPTS = {"pubhealth": PUBHEALTH_PROMPT, "arc_c": ARC_PROMPT}
