"""A griffe extension for the docs build: turns the docstrings' Hugging Face-style cross-references, [`Name`] and
[`Name.member`], into mkdocs-autorefs links to where the API reference documents that object, and reads the
Hugging Face parameter lines (`name (`int`, *optional*, defaults to `20`):`) as Google-style ones (`name (int):`),
the default being shown from the signature.

A name is looked up, at runtime, in the class and the module that hold the docstring, then in `r3hf`, `r3hf.index`
and `r3hf.rewards`; the link targets the object's defining module (`r3hf.modeling_sidr.SIDRModel`), which is where
the API pages render it. A name found nowhere is logged as a warning, which fails the strict build.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any

import griffe

logger = logging.getLogger("mkdocs.plugins.r3hf_crossrefs")
# TRL's parameter-group headings ("> Parameters that control ..."), which griffe's Google-style parser does not know.
GROUP_HEADING = re.compile(r"(\n[ \t]*)*\n[ \t]*> [^\n]*\n([ \t]*\n)*")
HF_PARAMETER = re.compile(r"^(\s+)(\w+) \((`[^\n]*)\):[ \t]*$", re.MULTILINE)
REFERENCE = re.compile(r"\[`([A-Za-z_][A-Za-z0-9_.]*)`\](?![\[(])")
SEARCHED = ("r3hf", "r3hf.index", "r3hf.rewards")


def _google_parameter(match: re.Match) -> str:
    kind = match.group(3).split(", ")[0].replace("`", "")
    return f"{match.group(1)}{match.group(2)} ({kind}):"


def _runtime(path: str) -> Any:
    """The object at a dotted path, importing its module."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _canonical(obj: Any, fallback: str) -> str:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(obj, type) or callable(obj) and module and qualname and "<" not in qualname:
        return f"{module}.{qualname}"
    if getattr(obj, "__spec__", None) is not None:  # a module
        return obj.__name__
    return fallback


def resolve(name: str, scopes: list[str]) -> str | None:
    """The documented path of `name` as seen from the docstring's scopes (innermost first), or `None`."""
    head, _, rest = name.partition(".")
    for scope in [*scopes, *SEARCHED] if not name.startswith("r3hf.") else [""]:
        path = f"{scope}.{head}" if scope else head
        try:
            obj = _runtime(path)
        except (ImportError, AttributeError):
            continue
        target = _canonical(obj, path)
        if rest:
            try:
                member = _runtime(f"{target}.{rest}")
            except (ImportError, AttributeError):
                continue
            target = _canonical(member, f"{target}.{rest}") if isinstance(member, type) else f"{target}.{rest}"
        return target
    return None


class CrossReferences(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        scopes = []
        parent = obj if obj.is_class else obj.parent
        while parent is not None:
            scopes.append(parent.path)
            parent = parent.parent

        def link(match: re.Match) -> str:
            target = resolve(match.group(1), scopes)
            if target is None:
                logger.warning(f"{obj.path}: cross-reference [`{match.group(1)}`] names nothing r3hf documents")
                return match.group(0)
            return f"[`{match.group(1)}`][{target}]"

        text = HF_PARAMETER.sub(_google_parameter, GROUP_HEADING.sub("\n", obj.docstring.value))
        obj.docstring.value = REFERENCE.sub(link, text)
