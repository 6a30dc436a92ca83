"""The package's shape: every module imports first, no import cycle, no private name crosses modules, no print."""

import ast
import importlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "r3hf"
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if "rag_accuracy" not in path.parts  # the `evaluate` metric script is loaded by `evaluate`, not imported
)

# Third-party libraries are imported once; then each r3hf module is imported first in a child forked from that state,
# so every child starts with no r3hf module loaded and the order of r3hf's own imports is what is tested.
FIRST_IMPORT_SCRIPT = """
import importlib, json, os, sys
import accelerate, datasets, huggingface_hub, numpy, peft, safetensors, scipy.stats, torch, transformers, trl
failures = {}
for name in json.loads(sys.argv[1]):
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            sys.stderr.write(f"{name}: {type(error).__name__}: {error}\\n")
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failures[name] = status
print(json.dumps(failures))
"""


def test_every_module_imports_first_in_a_fresh_process():
    proc = subprocess.run(
        [sys.executable, "-c", FIRST_IMPORT_SCRIPT, json.dumps(MODULES)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}, proc.stderr[-3000:]
    assert len(MODULES) > 15


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported r3hf module, names taken from it) for every import in a file, at any depth."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "r3hf":
                continue
            names = [alias.name for alias in node.names]
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            found += [(s, []) for s in submodules] or [(target, names)]
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "r3hf"]
    return found


def _module_path(name: str) -> Path:
    path = ROOT.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_the_import_graph_has_no_cycle():
    graph = {m: sorted({t for t, _ in _imports(_module_path(m)) if t != m}) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, []):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


def _subpackage(module: str) -> str | None:
    """The subpackage of r3hf that holds a module (`r3hf.index` for `r3hf.index.csr_index`), or `None` at the top level."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and _module_path(module).name == "__init__.py"):
        return ".".join(parts[:2])
    return None


def test_no_module_imports_a_private_name_from_another_subpackage():
    # Within one subpackage (r3hf.index, r3hf.rewards, ...) modules share private helpers; across them, they do not.
    offenders = [
        f"{m}: {target}.{name}"
        for m in MODULES
        for target, names in _imports(_module_path(m))
        for name in names
        if name.startswith("_")
        and name != "__version__"
        and (_subpackage(m) is None or _subpackage(m) != _subpackage(target))
    ]
    assert offenders == []
    assert _subpackage("r3hf.index.csr_index") == _subpackage("r3hf.index.shard") == "r3hf.index"
    assert _subpackage("r3hf.retrieval") is None


def test_the_library_logs_instead_of_printing():
    # The command line prints its results (search hits, URLs); everything else logs through module loggers.
    printing = [
        m
        for m in MODULES
        if m != "r3hf.cli"
        and any(
            isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
            for n in ast.walk(ast.parse(_module_path(m).read_text()))
        )
    ]
    assert printing == []


def test_the_library_has_one_logging_style():
    # Module loggers come from transformers' logging (whose verbosity users already set), never stdlib's getLogger;
    # only `enable_logging`, the command-line switch, touches stdlib handlers.
    styles = {}
    for m in MODULES:
        lines = _module_path(m).read_text().splitlines()
        if m != "r3hf.utils" and any(line.startswith("logger = ") for line in lines):
            styles[m] = "logger = logging.get_logger(__name__)" in lines and "import logging" not in lines
    assert styles and all(styles.values()), [m for m, ok in styles.items() if not ok]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_give_files_the_permissions_open_would(tmp_path):
    from r3hf.utils import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "result.json").read_text() == "{}"
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain.json").stat().st_mode
    )
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o644


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux reports the umask in /proc")
def test_the_umask_is_read_without_changing_it(monkeypatch, tmp_path):
    from r3hf.utils import atomic_write_text, current_umask

    umask = os.umask(0o027)
    try:
        # Setting the umask, even for a moment, would race with other threads creating files.
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail("the umask was changed to read it"))
        assert current_umask() == 0o027
        atomic_write_text(tmp_path / "result.json", "{}")
    finally:
        monkeypatch.undo()
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("r3hf.rewards.cache", "r3hf.rewards.score_store", "RewardCache"),
        ("r3hf.index.base", "r3hf.index.csr_index", "CSRIndex"),
    ],
)
def test_renamed_modules_keep_a_deprecated_alias_for_one_release(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} is now {new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
