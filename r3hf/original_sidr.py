"""The original SiDR checkpoint layout (jzhoubu/sidr-*, vsearch/svdr-*): recognise it and map it to r3hf's.

The original code drops the first `shift_vocab_num` vocabulary ids from its output; r3hf keeps the full vocabulary and
zeroes those dimensions instead, so every dot product is unchanged.
"""

from __future__ import annotations

import torch

# Buffers and heads the original checkpoints may carry that SIDR does not use.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_SIDES = {"encoder_q": ("query_encoder", "query_norm"), "encoder_p": ("passage_encoder", "passage_norm")}


def is_original_sidr_config(config: dict) -> bool:
    """Whether a `config.json` is in the original SiDR layout (`encoder_q` / `encoder_p` sections)."""
    return isinstance(config.get("encoder_q"), dict) and "model_type" not in config


def _side_config(config: dict, side: str) -> dict:
    side_cfg = config.get(side)
    if not isinstance(side_cfg, dict):
        raise ValueError(f"config.json has no '{side}' section: is this a checkpoint in the original SiDR layout?")
    missing = [k for k in ("shift_vocab_num", "topk", "max_len") if k not in side_cfg]
    if missing:
        raise ValueError(f"config.json['{side}'] lacks {missing}.")
    if side_cfg.get("pooling", "max") != "max":
        raise ValueError(f"Only max pooling is supported; config.json['{side}'] has pooling={side_cfg['pooling']!r}.")
    return side_cfg


def original_encoder_id(config: dict) -> str | None:
    """The Hub id or path the original code builds its encoders from (`encoder_q.model_id`)."""
    return config["encoder_q"].get("model_id")


def original_sidr_settings(config: dict, weights: dict[str, torch.Tensor]) -> dict:
    """[`SIDRConfig`] fields (all but `encoder_config`) of an original checkpoint."""
    q_cfg = _side_config(config, "encoder_q")
    shared = bool(config.get("shared_encoder", False)) or not any(k.startswith("encoder_p.") for k in weights)
    p_cfg = q_cfg if shared else _side_config(config, "encoder_p")
    if q_cfg["topk"] != p_cfg["topk"] or q_cfg["shift_vocab_num"] != p_cfg["shift_vocab_num"]:
        raise ValueError("Query and passage encoders with different topk or shift_vocab_num are not supported.")
    return {
        "shared_encoder": shared,
        "topk": int(q_cfg["topk"]),
        "query_max_length": int(q_cfg["max_len"]),
        "passage_max_length": int(p_cfg["max_len"]),
        "zeroed_token_ids": list(range(int(q_cfg["shift_vocab_num"]))),
    }


def original_state_dict(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], shared: bool
) -> dict[str, torch.Tensor]:
    """Rename original weights (`encoder_{q,p}.bert_model.*`, `encoder_{q,p}.ln.*`) to a [`SIDRModel`]'s, checking
    that every expected weight is there with the expected shape.

    Args:
        weights: The original state dict.
        expected: The target model's state dict (names and shapes).
        shared: Whether the checkpoint has one encoder for both sides.
    """
    state = {}
    for key, tensor in weights.items():
        prefix, _, rest = key.partition(".")
        if prefix not in _SIDES or rest.endswith(_IGNORED_SUFFIXES) or (shared and prefix == "encoder_p"):
            continue
        encoder_name, norm_name = _SIDES[prefix]
        if rest.startswith("bert_model."):
            target = f"{encoder_name}.{rest[len('bert_model.') :]}"
        elif rest.startswith("ln."):
            target = f"{norm_name}.{rest[len('ln.') :]}"
        else:
            continue
        if target not in expected:
            raise ValueError(f"Unexpected weight {key!r} (mapped to {target!r}): the encoder_config does not match.")
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise ValueError(
                f"Weight {key!r} has shape {tuple(tensor.shape)} but the encoder_config expects "
                f"{tuple(expected[target].shape)}: pass the matching encoder_config."
            )
        state[target] = tensor
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"The checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}.")
    return state
