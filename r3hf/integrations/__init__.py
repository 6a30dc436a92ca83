"""Where a trained retriever goes after r3hf: sentence-transformers folders (written by every save) and engines."""
