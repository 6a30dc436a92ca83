"""Convert a checkpoint in the original SiDR layout (jzhoubu/sidr-*, vsearch/svdr-*) into an r3hf `SIDRModel`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, BertConfig

from .modeling_sidr import SIDRConfig, SIDRModel

# Buffers and heads the original checkpoints may carry that SIDR does not use.
_IGNORED_SUFFIXES = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
_SIDES = {"encoder_q": ("query_encoder", "query_norm"), "encoder_p": ("passage_encoder", "passage_norm")}


def _read_original_weights(src: Path) -> dict[str, torch.Tensor]:
    if (src / "model.safetensors").exists():
        return load_file(src / "model.safetensors")
    if (src / "pytorch_model.bin").exists():
        return torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{src} has neither model.safetensors nor pytorch_model.bin.")


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


def convert_sidr_checkpoint(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    encoder_config: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    activate_lexical: bool = True,
) -> SIDRModel:
    """Convert an original SiDR checkpoint folder into an r3hf checkpoint that scores exactly as the original does.

    The original drops the first `shift_vocab_num` vocabulary ids from its output; r3hf keeps the full vocabulary and
    zeroes those dimensions instead, so every dot product is unchanged.

    Args:
        src_dir: Folder with `config.json` (`encoder_q` / `encoder_p` sections holding `shift_vocab_num`, `topk`,
            `max_len`, `pooling`) and `model.safetensors` or `pytorch_model.bin` (`encoder_{q,p}.bert_model.*`,
            `encoder_{q,p}.ln.{weight,bias}`).
        out_dir: Where the r3hf checkpoint is written.
        encoder_config: Path of the BERT configuration of the encoders; defaults to bert-base-uncased's.
        tokenizer: Path or Hub id of the tokenizer; defaults to the one in `src_dir`.
        activate_lexical: Keep the dimensions of the text's own tokens besides the top-k, as the original `embed()`
            does by default.

    Returns:
        The converted [`SIDRModel`], also saved to `out_dir`.
    """
    src = Path(src_dir)
    config_path = src / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} not found.")
    original = json.loads(config_path.read_text())
    q_cfg = _side_config(original, "encoder_q")
    weights = _read_original_weights(src)
    shared = bool(original.get("shared_encoder", False)) or not any(k.startswith("encoder_p.") for k in weights)
    p_cfg = q_cfg if shared else _side_config(original, "encoder_p")
    if q_cfg["topk"] != p_cfg["topk"] or q_cfg["shift_vocab_num"] != p_cfg["shift_vocab_num"]:
        raise ValueError("Query and passage encoders with different topk or shift_vocab_num are not supported.")

    bert_config = AutoConfig.from_pretrained(encoder_config) if encoder_config else BertConfig()
    if tokenizer is None:
        if not (src / "tokenizer_config.json").exists() and not (src / "vocab.txt").exists():
            raise ValueError(f"{src} holds no tokenizer: pass tokenizer='bert-base-uncased' (or a local path).")
        tokenizer = src
    tok = AutoTokenizer.from_pretrained(tokenizer)

    config = SIDRConfig(
        encoder_config=bert_config.to_dict(),
        shared_encoder=shared,
        topk=int(q_cfg["topk"]),
        activate_lexical=activate_lexical,
        query_max_length=int(q_cfg["max_len"]),
        passage_max_length=int(p_cfg["max_len"]),
        zeroed_token_ids=list(range(int(q_cfg["shift_vocab_num"]))),
    )
    model = SIDRModel(config, tokenizer=tok)
    expected = model.state_dict()
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
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out_dir)
    return model
