"""Model and index cards rendered from the Jinja templates in `model_cards/`, with `huggingface_hub` card utilities.

Cards take plain values (never a trainer), and name models by their public Hub ids: a packaged offline asset is named
by the upstream repo it was taken from, and a path of the machine that trained is never written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .assets import hub_id_of_path
from .version import __version__

# In a wheel the templates are packaged as `r3hf/model_cards/`; in a source checkout they sit at the repository root.
_PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES = next(d for d in (_PACKAGE_DIR / "model_cards", _PACKAGE_DIR.parent / "model_cards") if d.is_dir())
TAGS = ["r3hf", "r3", "sidr", "retrieval", "rag"]

_INDEX_KINDS = {
    "bag_of_tokens": (
        "BagOfTokensIndex",
        "Bag-of-tokens",
        "binary bag-of-tokens index T(D) (built by the tokenizer alone)",
    ),
    "sparse_embedding": ("SparseEmbeddingIndex", "Sparse embedding", "parametric top-k embedding index E(D)"),
}


def public_model_id(name_or_path: str | os.PathLike | None) -> str | None:
    """The public name of a model for a card: the upstream Hub id of a packaged offline asset, a Hub id as it is, and
    `None` for any other local path."""
    if not name_or_path:
        return None
    name = str(name_or_path)
    packaged = hub_id_of_path(name)
    if packaged:
        return packaged
    if os.path.isabs(name) or os.path.exists(name) or name.startswith((".", "~")):
        return None
    return name


def push_folder(
    save: Callable[[str, str], None],
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str,
    commit_description: str | None = None,
    delete_patterns: list[str] | None = None,
) -> str:
    """Create the repo if needed, let `save(folder, repo_id)` write everything into a temporary folder, and upload it
    with `HfApi.upload_folder` (several resumable commits for a large folder); remote files matching
    `delete_patterns` that the folder does not hold are deleted. Returns the commit URL."""
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp, repo_id)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=tmp,
            repo_type=repo_type,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message,
            commit_description=commit_description,
            delete_patterns=delete_patterns,
        )
    return info.commit_url


def _is_repo_id(name: str | None) -> bool:
    try:
        validate_repo_id(name)
    except (HFValidationError, TypeError):
        return False
    return public_model_id(name) is not None


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
        **{
            **config,
            "tokenizer_name_or_path": public_model_id(config.get("tokenizer_name_or_path")) or "saved with the index",
            "model_name_or_path": public_model_id(config.get("model_name_or_path")),
        },
    )


def render_retriever_card(
    model_name: str,
    config,
    base_model: str | None = None,
    reward_llm: str | None = None,
    threshold: float | str | None = None,
    dataset_name: str | None = None,
    num_passages: int | None = None,
    top_m: int | None = None,
    top_k: int | None = None,
    eval_results: dict[str, float] | None = None,
    hyperparameters: dict | None = None,
    repo_id: str | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """The model card of a SIDR retriever, from `model_cards/retriever_card.md`.

    Args:
        model_name: The card's title.
        config: The retriever's [`SIDRConfig`] (top-k, encoder sharing, lengths).
        base_model: The retriever or encoder training started from (a Hub id or a packaged asset's path).
        reward_llm: The LLM of the reward (a Hub id or a packaged asset's path).
        threshold: The reward threshold.
        dataset_name: Training data.
        num_passages, top_m, top_k: Index size and late-parametric settings used in training.
        eval_results: Metric name → value.
        hyperparameters: Training settings to list.
        repo_id: The Hub repo the card will live in (for the usage snippet).
        tags: Extra tags.
    """
    import torch
    import transformers
    import trl

    base_model, reward_llm = public_model_id(base_model), public_model_id(reward_llm)
    card_data = ModelCardData(
        library_name="r3hf",
        base_model=base_model,
        datasets=[dataset_name] if _is_repo_id(dataset_name) else None,
        tags=list(dict.fromkeys([*TAGS, *(tags or [])])),
        pipeline_tag="feature-extraction",
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "retriever_card.md"),
        model_name=model_name,
        repo_id=repo_id or f"your-namespace/{model_name}",
        base_model=base_model or "a local encoder",
        llm=reward_llm,
        threshold=threshold,
        dataset_name=dataset_name,
        num_passages=num_passages,
        top_m=top_m,
        top_k=top_k,
        topk=config.topk,
        shared_encoder=config.shared_encoder,
        eval_results=eval_results or {},
        hyperparameters=hyperparameters or {},
        versions={
            "r3hf": __version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "torch": torch.__version__,
        },
    )
