"""The docs: the quick start runs as pasted, the README carries the same code, and the API reference documents every
public name."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import r3hf
import r3hf.index
import r3hf.rewards

ROOT = Path(__file__).resolve().parents[1]


def _python_block(text: str, after: str = "") -> str:
    start = text.index(after) if after else 0
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_the_readme_quick_start_is_the_docs_one():
    docs = _python_block((ROOT / "docs" / "quickstart.md").read_text())
    assert _python_block((ROOT / "README.md").read_text(), after="## Quick start") == docs


@pytest.mark.slow
def test_the_quick_start_runs_as_pasted(tmp_path):
    """The docs' quick start in a fresh process, from a folder laid out like the repository (its `data/`)."""
    (tmp_path / "data").symlink_to(ROOT / "data")
    code = _python_block((ROOT / "docs" / "quickstart.md").read_text())
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = proc.stdout.strip().splitlines()
    assert "nq_test_rag_accuracy@1" in printed[-2] and "nq_test_rag_accuracy@1" in printed[-1]
    assert (tmp_path / "outputs" / "quickstart").is_dir()


def _documented() -> set[str]:
    return {
        line.split(":::", 1)[1].strip()
        for page in (ROOT / "docs" / "api").glob("*.md")
        for line in page.read_text().splitlines()
        if line.startswith(":::")
    }


def test_the_api_reference_documents_every_public_name():
    documented = _documented()
    missing = []
    for package in (r3hf, r3hf.index, r3hf.rewards):
        for name in package.__all__:
            if name == "__version__":
                continue
            obj = getattr(package, name)
            if hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
                found = f"{obj.__module__}.{obj.__qualname__}" in documented
            else:  # a constant: documented under the module that defines it
                found = any(path.endswith(f".{name}") and path.startswith(package.__name__) for path in documented)
            if not found:
                missing.append(f"{package.__name__}.{name}")
    assert missing == []
