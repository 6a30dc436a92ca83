"""Model and index cards rendered from the Jinja templates in `model_cards/`, with `huggingface_hub` card utilities."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData

TEMPLATES = Path(__file__).resolve().parent.parent / "model_cards"

_INDEX_KINDS = {
    "bag_of_tokens": (
        "BagOfTokensIndex",
        "Bag-of-tokens",
        "binary bag-of-tokens index T(D) (built by the tokenizer alone)",
    ),
    "sparse_embedding": ("SparseEmbeddingIndex", "Sparse embedding", "parametric top-k embedding index E(D)"),
}


def render_index_card(config: dict, repo_id: str = "your-namespace/your-index") -> DatasetCard:
    """The dataset card of an index, from `model_cards/index_card.md` and the index's `index_config.json`."""
    class_name, title, description = _INDEX_KINDS[config["index_type"]]
    card_data = DatasetCardData(
        library_name="r3hf",
        tags=["r3hf", "retrieval", "sparse-index", config["index_type"]],
        task_categories=["text-retrieval"],
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "index_card.md"),
        class_name=class_name,
        index_type_title=title,
        index_description=description,
        repo_id=repo_id,
        has_values=config["index_type"] == "sparse_embedding",
        **config,
    )
