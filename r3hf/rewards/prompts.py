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
