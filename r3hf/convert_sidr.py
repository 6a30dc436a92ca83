"""Convert a checkpoint in the original SiDR layout (jzhoubu/sidr-*, vsearch/svdr-*) into an r3hf `SIDRModel` folder.

[`SIDRModel.from_pretrained`] reads the original layout directly (in memory); this writes the r3hf layout once, and is
the only path that accepts a pickled `pytorch_model.bin` (restricted to tensors, and only when asked).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .modeling_sidr import SIDRModel
from .utils import staging_dir


def convert_sidr_checkpoint(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    encoder_config: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    activate_lexical: bool = True,
    allow_pickle: bool = False,
) -> SIDRModel:
    """Convert an original SiDR checkpoint into an r3hf checkpoint that scores exactly as the original does.

    Args:
        src_dir: Folder or Hub repo with `config.json` (`encoder_q` / `encoder_p` sections holding `shift_vocab_num`,
            `topk`, `max_len`, `pooling`, `model_id`) and `model.safetensors` (`encoder_{q,p}.bert_model.*`,
            `encoder_{q,p}.ln.{weight,bias}`).
        out_dir: Where the r3hf checkpoint is written.
        encoder_config: The BERT configuration of the encoders; defaults to the checkpoint's `model_id`'s.
        tokenizer: Path or Hub id of the tokenizer; defaults to the one in `src_dir`, else the `model_id`'s.
        activate_lexical: Keep the dimensions of the text's own tokens besides the top-k, as the original `embed()`
            does by default.
        allow_pickle: Accept a local `pytorch_model.bin` when there is no `model.safetensors` (loaded with
            `torch.load(weights_only=True)`; only for files you trust).

    Returns:
        The converted [`SIDRModel`], also saved to `out_dir`.
    """
    src = Path(src_dir)
    kwargs = dict(encoder_config=encoder_config, tokenizer=tokenizer, activate_lexical=activate_lexical)
    if src.is_dir() and not (src / "model.safetensors").exists() and (src / "pytorch_model.bin").exists():
        if not allow_pickle:
            raise ValueError(
                f"{src} holds only pytorch_model.bin, a pickle: pass allow_pickle=True (--allow-pickle) if you trust it."
            )
        weights = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
        with staging_dir(Path(out_dir).parent) as tmp:
            for name in os.listdir(src):
                if name != "pytorch_model.bin":
                    os.symlink((src / name).resolve(), tmp / name)
            save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "model.safetensors")
            model = SIDRModel.from_pretrained(tmp, **kwargs)
    else:
        model = SIDRModel.from_pretrained(src_dir, **kwargs)
    model.config.name_or_path = str(src_dir)
    model.save_pretrained(out_dir)
    return model
