"""`evaluate` metric modules shipped with r3hf."""

from pathlib import Path

RAG_ACCURACY_PATH = str(Path(__file__).parent / "rag_accuracy" / "rag_accuracy.py")
