"""Model and index cards rendered from the Jinja templates in `model_cards/`, with `huggingface_hub` card utilities."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

# In a wheel the templates are packaged as `r3hf/model_cards/`; in a source checkout they sit at the repository root.
_PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = next(d for d in (_PACKAGE_DIR / "model_cards", _PACKAGE_DIR.parent / "model_cards") if d.is_dir())

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


def render_retriever_card(
    trainer, model_name: str | None = None, dataset_name: str | None = None, tags: str | list[str] | None = None
) -> ModelCard:
    """The model card of a retriever trained by an [`R3Trainer`], from `model_cards/retriever_card.md`."""
    import torch
    import transformers
    import trl

    from . import __version__

    args = trainer.args
    sidr = trainer._sidr()
    reward = trainer.reward_funcs[0]
    llm = getattr(getattr(reward, "model", None), "name_or_path", None) or getattr(reward, "__name__", "custom reward")
    eval_results = {}
    for entry in trainer.state.log_history:
        eval_results.update({k: v for k, v in entry.items() if k.startswith("eval_") and isinstance(v, float)})
    extra_tags = [tags] if isinstance(tags, str) else list(tags or [])
    base_model = sidr.config.name_or_path or None
    card_data = ModelCardData(
        library_name="r3hf",
        base_model=base_model if base_model and not os.path.isabs(base_model) else None,
        datasets=[dataset_name] if dataset_name else None,
        tags=list(dict.fromkeys([*trainer._tag_names, *extra_tags])),
        pipeline_tag="feature-extraction",
    )
    names = (
        "learning_rate",
        "per_device_train_batch_size",
        "num_train_epochs",
        "max_steps",
        "warmup_epochs_offline",
        "retrieval_top_m",
        "retrieval_top_k",
        "parametric_loss_weight",
        "semi_parametric_loss_weight",
        "temperature",
        "positive_fallback",
        "seed",
    )
    hyperparameters = {name: getattr(args, name) for name in names}
    hyperparameters["world_size"] = args.world_size
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "retriever_card.md"),
        model_name=model_name or os.path.basename(os.path.normpath(args.output_dir)),
        repo_id=args.hub_model_id or f"your-namespace/{os.path.basename(os.path.normpath(args.output_dir))}",
        base_model=sidr.config.name_or_path or "unknown",
        llm=llm,
        threshold=getattr(reward, "threshold", None),
        dataset_name=dataset_name,
        num_passages=len(trainer.index),
        top_m=args.retrieval_top_m,
        top_k=args.retrieval_top_k,
        eval_results=eval_results,
        hyperparameters=hyperparameters,
        versions={
            "r3hf": __version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "torch": torch.__version__,
        },
    )
