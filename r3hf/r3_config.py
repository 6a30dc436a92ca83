"""Configuration of the R3 trainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transformers import TrainingArguments

from .retrieval import check_first_stage

POSITIVE_FALLBACKS = ("offline", "gold", "skip")


@dataclass
class R3Config(TrainingArguments):
    r"""
    Configuration of [`R3Trainer`]: `transformers.TrainingArguments` plus the R3-specific options below. Defaults
    follow the OpenRAG/R3 papers where they state a value (see the paper index in the docs).

    Parameters whose defaults differ from `TrainingArguments`' (as in TRL's configs): `learning_rate` (2e-5, the
    paper's; 5e-5 there), `logging_steps` (10; 500 there: steps are expensive), `remove_unused_columns` (`False`:
    rewards receive the dataset's columns) and `ddp_find_unused_parameters` (`False`: every parameter is used at each
    step).

    Parameters:
        > Parameters that control on-policy retrieval

        rerank_top_m (`int`, *optional*, defaults to `20`):
            Candidates taken per query from each first stage (the bag-of-tokens index by E(q)·T(d), bm25s, or both).
        retrieval_top_k (`int`, *optional*, defaults to `20`):
            Candidates kept after the re-rank with fresh passage embeddings, and scored by the reward (OpenRAG: m = k
            = 20).
        first_stage (`str`, *optional*, defaults to `"bag_of_tokens"`):
            Where on-policy retrieval and offline hard-negative mining take their candidates: `"bag_of_tokens"` (the
            paper's), `"bm25"` (the index's bm25s part) or `"hybrid"` (the union of both top-m lists). Both are fixed
            while the retriever trains, so neither goes stale. Train in the pipeline you will deploy.
        negative_first_stage (`str` or `None`, *optional*):
            Where offline hard-negative mining alone takes its candidates, when it should differ from `first_stage`:
            `"bm25"` mines bm25s's best match without a gold answer, the mistakes a hybrid pipeline's fusion
            inherits from bm25s (in the demo's measurement, +4.4 answer recall@1 on nq_test in the hybrid pipeline
            over bag-of-tokens negatives). `None`: `first_stage`.
        fusion (`str`, *optional*, defaults to `"none"`):
            The final ranking of the candidates: E(q)·E(d) (`"none"`), or its reciprocal-rank (`"rrf"`), rank-
            `"weighted"` or `"score"` fusion with bm25s ([`r3hf.retrieval.fuse`]); bm25 and hybrid first stages only.
        fusion_weight (`float`, *optional*, defaults to `0.5`):
            Weight of the dense score in a `"weighted"` or `"score"` fusion. Choose it on a dev split, never on a test
            set.
        max_query_length (`int` or `None`, *optional*):
            Overrides the model's `query_max_length`.
        max_passage_length (`int` or `None`, *optional*):
            Overrides the model's `passage_max_length`.

        > Parameters that control rewards and sampling

        warmup_epochs_offline (`float`, *optional*, defaults to `0.0`):
            Epochs trained on offline pairs (calibration pools or gold passages) before on-policy retrieval starts.
            The papers spend half of 80 epochs this way.
        offline_only (`bool`, *optional*, defaults to `False`):
            Train on offline pairs only: the paper's first stage as a run of its own, with no on-policy retrieval and
            no reward calls, so [`R3Trainer`] needs no reward function.
        positive_fallback (`str`, *optional*, defaults to `"offline"`):
            Where a positive comes from when no retrieved passage is rewarded: `"offline"` (the calibration's
            positive pool, else the gold `positive_ids`), `"gold"` (`positive_ids` only) or `"skip"`.
        reward_weights (`list[float]` or `None`, *optional*):
            Weights of the reward functions (all 1 by default). Unlike TRL's `reward_weights`, which weight a sum of
            scalar rewards, R3 needs one binary label per passage: a passage is rewarded when the weighted **mean** of
            the rewards that are not `None` is at least 0.5, unrewarded below, and ignored when all are `None`.
        reward_cache_dir (`str` or `None`, *optional*):
            Folder of the append-only reward-score store ([`RewardCache`]; `<output_dir>/reward_cache` by default):
            one SQLite segment per process, every segment searched on lookup (scores stay on disk), so resumed or
            repeated runs with the same LLM and prompt start warm whatever their number of processes. Point several
            runs at one folder to share it.

        > Parameters that control the loss

        parametric_loss_weight (`float`, *optional*, defaults to `1.0`):
            Weight of L(E(q), E(d)).
        semi_parametric_loss_weight (`float`, *optional*, defaults to `0.5`):
            Weight of each of L(E(q), T(d)) and L(T(q), E(d)).
        temperature (`float`, *optional*, defaults to `1.0`):
            Divides the raw dot products in the InfoNCE terms.
        bm25_residual_weight (`float`, *optional*, defaults to `0.0`):
            Trains L(E(q), E(d)) on the fused score E(q)·E(d) + this weight × bm25s's z-scored score (in units of the
            dense scores' spread, [`r3hf.losses.bm25_residual_bias`]), so that the retriever learns what bm25s misses
            rather than what it already ranks well: for a hybrid pipeline, whose final ranking fuses the two. A
            `"weighted"` fusion of dense weight `w` corresponds to `(1 - w) / w`. Needs the index's bm25s part; 0 (the
            paper's loss) adds nothing.
        flops_weight (`float`, *optional*, defaults to `0.0`):
            Weight of SPLADE's FLOPS sparsity regulariser on E(q) and E(d) (valid queries and their passages); 0 (the
            paper) adds none.
        gather_across_processes (`bool`, *optional*, defaults to `True`):
            Gather embeddings across processes so in-batch negatives span every GPU.

        > Parameters that control evaluation

        eval_recall_at (`list[int]`, *optional*, defaults to `[1, 5, 20]`):
            Cut-offs of answer-recall@k during evaluation.
        eval_rag_accuracy (`bool`, *optional*, defaults to `True`):
            Also measure RAG accuracy (greedy generation with the top passages) with the first reward's LLM.
        eval_rag_contexts (`list[int]`, *optional*, defaults to `[1]`):
            Numbers of top passages in the reader's context for RAG accuracy: the papers report `[1, 10]`.
    """

    rerank_top_m: int = field(default=20, metadata={"help": "Candidates per query from each first stage (m)."})
    retrieval_top_k: int = field(default=20, metadata={"help": "Candidates re-ranked, kept and scored per query."})
    first_stage: str = field(
        default="bag_of_tokens", metadata={"help": "Candidates from 'bag_of_tokens', 'bm25' or 'hybrid' (union)."}
    )
    negative_first_stage: str | None = field(
        default=None, metadata={"help": "First stage of offline hard-negative mining (default: first_stage)."}
    )
    fusion: str = field(
        default="none", metadata={"help": "Final ranking: 'none' (E(q)·E(d)), 'rrf', 'weighted' or 'score'."}
    )
    fusion_weight: float = field(
        default=0.5, metadata={"help": "Dense weight of a 'weighted' or 'score' fusion (tune on dev)."}
    )
    max_query_length: int | None = field(default=None, metadata={"help": "Overrides the model's query_max_length."})
    max_passage_length: int | None = field(
        default=None, metadata={"help": "Overrides the model's passage_max_length."}
    )
    warmup_epochs_offline: float = field(
        default=0.0, metadata={"help": "Epochs on offline pairs before on-policy retrieval starts."}
    )
    offline_only: bool = field(
        default=False, metadata={"help": "Train on offline pairs only (no on-policy retrieval, no reward calls)."}
    )
    positive_fallback: str = field(
        default="offline", metadata={"help": "Positive when none is rewarded: 'offline', 'gold' or 'skip'."}
    )
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Weights of the reward functions: a passage is rewarded when their weighted mean >= 0.5."},
    )
    reward_cache_dir: str | None = field(default=None, metadata={"help": "Folder of the shared reward-score store."})
    parametric_loss_weight: float = field(default=1.0, metadata={"help": "Weight of L(E(q), E(d))."})
    semi_parametric_loss_weight: float = field(
        default=0.5, metadata={"help": "Weight of each of L(E(q), T(d)) and L(T(q), E(d))."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Divides the dot products in InfoNCE."})
    bm25_residual_weight: float = field(
        default=0.0, metadata={"help": "Weight of bm25s's score fused into L(E(q), E(d)) (0: the paper's loss)."}
    )
    flops_weight: float = field(default=0.0, metadata={"help": "Weight of the FLOPS regulariser on E(q), E(d)."})
    gather_across_processes: bool = field(
        default=True, metadata={"help": "Gather embeddings across processes for in-batch negatives."}
    )
    eval_recall_at: list[int] = field(
        default_factory=lambda: [1, 5, 20], metadata={"help": "answer-recall@k cut-offs."}
    )
    eval_rag_accuracy: bool = field(default=True, metadata={"help": "Measure RAG accuracy during evaluation."})
    eval_rag_contexts: list[int] = field(
        default_factory=lambda: [1], metadata={"help": "Passages in the reader's context for RAG accuracy."}
    )

    # TrainingArguments defaults changed for R3 (as TRL does for its trainers).
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (paper: 2e-5)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep dataset columns: rewards receive them."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every parameter is used at each step, so DDP need not search."}
    )

    @property
    def pipeline(self) -> dict:
        """`first_stage`, `fusion` and `fusion_weight`, as [`r3hf.retrieval.retrieve`] and [`RAGEvaluator`] take
        them."""
        return {"first_stage": self.first_stage, "fusion": self.fusion, "fusion_weight": self.fusion_weight}

    @property
    def needs_bm25(self) -> bool:
        """Whether training reads the index's bm25s part: a bm25 or hybrid first stage (on-policy or for mined
        negatives) or bm25s's score in the loss."""
        return bool({self.first_stage, self.negative_first_stage} & {"bm25", "hybrid"} or self.bm25_residual_weight)

    def __post_init__(self):
        super().__post_init__()
        if self.retrieval_top_k < 1 or self.rerank_top_m < self.retrieval_top_k:
            raise ValueError(
                f"Need 1 <= retrieval_top_k <= rerank_top_m, got k={self.retrieval_top_k}, "
                f"m={self.rerank_top_m}: raise rerank_top_m or lower retrieval_top_k."
            )
        check_first_stage(self.first_stage, self.fusion, self.fusion_weight)
        if self.negative_first_stage is not None:
            check_first_stage(self.negative_first_stage)
        if self.positive_fallback not in POSITIVE_FALLBACKS:
            raise ValueError(f"positive_fallback must be one of {POSITIVE_FALLBACKS}, got {self.positive_fallback!r}.")
        for name in ("flops_weight", "bm25_residual_weight"):
            if not 0 <= getattr(self, name) < math.inf:  # NaN included
                raise ValueError(f"{name} must be >= 0 and finite, got {getattr(self, name)}.")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}.")
        if self.warmup_epochs_offline < 0:
            raise ValueError(f"warmup_epochs_offline must be >= 0, got {self.warmup_epochs_offline}.")
        if self.remove_unused_columns:
            raise ValueError("R3Trainer needs remove_unused_columns=False: rewards read the dataset's columns.")
