"""Model and index cards: typed card data, rendered from the Jinja templates in `model_cards/` with `huggingface_hub`.

As sentence-transformers' `SentenceTransformerModelCardData`, a retriever carries a [`SIDRModelCardData`] that its
loaders and [`R3Trainer`] fill in, and that `save_pretrained` and `push_to_hub` render. Cards name models by their
public Hub ids: a packaged offline asset is named by the upstream repo it was taken from, and a path of the machine
that trained is never written.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .assets import hub_id_of_path
from .configuration_sidr import SIDRConfig
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


def _is_repo_id(name: str | None) -> bool:
    try:
        validate_repo_id(name)
    except (HFValidationError, TypeError):
        return False
    return public_model_id(name) is not None


@dataclass
class SIDRModelCardData:
    """What a retriever's model card says. A [`SIDRModel`] holds one as `model.model_card_data`; its loaders set
    `base_model` and [`R3Trainer.create_model_card`] the rest.

    Args:
        model_name (`str`, *optional*):
            The card's title; defaults to the name of the folder the model was loaded from.
        base_model (`str`, *optional*):
            The retriever or encoder training started from (a Hub id, or a packaged asset's path).
        reward_llm (`str`, *optional*):
            The LLM of the reward (a Hub id, or a packaged asset's path). A card without one describes an untrained
            SIDR retriever.
        threshold (`float`, *optional*):
            The reward threshold.
        dataset_name (`str`, *optional*):
            Training data; a Hub dataset id is also listed in the card's metadata.
        num_passages (`int`, *optional*):
            Size of the index searched in training.
        rerank_top_m (`int`, *optional*):
            First-stage candidates per question re-ranked in training (m).
        retrieval_top_k (`int`, *optional*):
            Re-ranked passages scored by the reward per question (k).
        eval_results (`dict[str, float]`):
            Metric name → value of the last evaluation.
        hyperparameters (`dict`):
            Training settings to list.
        repo_id (`str`, *optional*):
            The Hub repo the card lives in, for its usage snippet.
        tags (`list[str]`):
            Tags besides r3hf's own.
    """

    model_name: str | None = None
    base_model: str | None = None
    reward_llm: str | None = None
    threshold: float | None = None
    dataset_name: str | None = None
    num_passages: int | None = None
    rerank_top_m: int | None = None
    retrieval_top_k: int | None = None
    eval_results: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict = field(default_factory=dict)
    repo_id: str | None = None
    tags: list[str] = field(default_factory=list)

    def to_card(self, config: SIDRConfig, **overrides) -> ModelCard:
        """The model card of a retriever with this data (updated by `overrides`, without changing it) and `config`,
        from `model_cards/retriever_card.md`."""
        import torch
        import transformers
        import trl

        data = dataclasses.replace(self, **overrides)
        base_model, reward_llm = public_model_id(data.base_model), public_model_id(data.reward_llm)
        model_name = data.model_name or Path(str(config.name_or_path or "sidr-retriever")).name
        card_data = ModelCardData(
            library_name="r3hf",
            base_model=base_model,
            datasets=[data.dataset_name] if _is_repo_id(data.dataset_name) else None,
            tags=list(dict.fromkeys([*TAGS, *data.tags])),
            pipeline_tag="feature-extraction",
        )
        return ModelCard.from_template(
            card_data,
            template_path=str(TEMPLATES / "retriever_card.md"),
            **{
                **dataclasses.asdict(data),
                "model_name": model_name,
                "repo_id": data.repo_id or f"your-namespace/{model_name}",
                "base_model": base_model or "a local encoder",
                "reward_llm": reward_llm,
            },
            max_active_dims=config.max_active_dims,
            shared_encoder=config.shared_encoder,
            versions={
                "r3hf": __version__,
                "transformers": transformers.__version__,
                "trl": trl.__version__,
                "torch": torch.__version__,
            },
        )


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
