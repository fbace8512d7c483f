"""docs/CONFIG.md, the reference of every setting, written from the config dataclasses themselves.

Each field's docstring (the string under it) is its documentation, so the reference cannot drift from
the code: ``python -m memsel.config_reference > docs/CONFIG.md`` rewrites it, and a test checks that
the file is current and that no setting lacks a docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
from typing import Any, Iterator

from memsel.config import Config
from memsel.data.budget import STRATEGIES
from memsel.data.sample import DATASETS
from memsel.env import READERS
from memsel.selector_configs import FAMILIES, SelectorConfig
from memsel.tune_configs import SCHEDULERS, SEARCH_ALGS

SECTIONS = ("data", "env", "selector", "pretrain", "ppo", "tune", "manager")
COMPONENTS = (("selector.kind", FAMILIES, "selector: {kind: NAME, FIELD: ...} (flat keys)"),
              ("env.budget_strategy", STRATEGIES, "env.budget_options: {FIELD: ...}"),
              ("data.dataset", DATASETS, "data.dataset_options: {FIELD: ...}"),
              ("env.reader", READERS, "reader_config (set by memsel)"),
              ("tune.scheduler", SCHEDULERS, "tune.scheduler_options: {FIELD: ...}"),
              ("tune.search_alg", SEARCH_ALGS, "tune.search_options: {FIELD: ...}"))


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it, for ``cls`` and the dataclasses it inherits from."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    return "`" + json.dumps(value).replace("|", "\\|") + "`"


def _rows(cls: type, prefix: str, skip: set[str] = frozenset()) -> Iterator[str]:
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        yield f"| `{prefix}{f.name}` | {_default(f)} | {docs.get(f.name, '').replace('|', '/')} |"


def _table(cls: type, prefix: str, skip: set[str] = frozenset()) -> list[str]:
    rows = list(_rows(cls, prefix, skip))
    return ["| setting | default | what it does |", "| --- | --- | --- |", *rows, ""] if rows else []


def undocumented() -> list[str]:
    """Every setting without a docstring (the reference test asks for none)."""
    classes = [Config, *(type(getattr(Config(), s)) for s in SECTIONS)]
    # Configs with FLAT_PREFIX read their fields from a section's own keys, documented there.
    classes += [reg.config_cls(n) for _, reg, _ in COMPONENTS for n in reg.names()
                if reg.config_cls(n) and not hasattr(reg.config_cls(n), "FLAT_PREFIX")]
    missing = []
    for cls in classes:
        docs = field_docs(cls)
        missing += [f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)
                    if f.name not in docs and f.name not in SECTIONS]
    return missing


def _component_section(key: str, registry: Any, how: str) -> list[str]:
    out = [f"### `{key}`: {', '.join(f'`{n}`' for n in registry.names())}", "", f"Own settings: {how}.", ""]
    for name in registry.names():
        cls = registry.config_cls(name)
        skip = {f.name for f in dataclasses.fields(SelectorConfig)} if registry is FAMILIES else set()
        doc = " ".join((inspect.getdoc(cls) or "").split()) if cls is not None else ""
        out += [f"**`{name}`**" + (f": {doc}" if doc else ""), ""]
        if cls is not None and hasattr(cls, "FLAT_PREFIX"):
            section = key.split(".")[0]
            keys = ", ".join(f"`{section}.{cls.FLAT_PREFIX}{f.name}`" for f in dataclasses.fields(cls))
            out += [f"Its settings are the section's own keys: {keys}.", ""]
            continue
        out += (_table(cls, "", skip) if cls is not None else []) or ["No settings of its own.", ""]
    return out


def reference_markdown() -> str:
    """The whole of docs/CONFIG.md."""
    cfg = Config()
    out = ["# memsel settings", "",
           "Written by `python -m memsel.config_reference > docs/CONFIG.md` from the config dataclasses (each",
           "field's docstring); a test keeps it current. Set any of them in a YAML file (`--config`, which may",
           "name a `base:` file to build on), with `--set section.key=value`, or with the CLI flags.", "",
           "## Top level", "", *_table(Config, "", set(SECTIONS))]
    for section in SECTIONS:
        cls = type(getattr(cfg, section))
        doc = " ".join((inspect.getdoc(cls) or "").split())
        out += [f"## `{section}`", "", doc, ""]
        out += _table(SelectorConfig if section == "selector" else cls, f"{section}.")
    out += ["## Components", "",
            "Each name below is a component that registered itself with its own settings (memsel.registry);",
            "a module named in `plugins` can register more.", ""]
    for key, registry, how in COMPONENTS:
        out += _component_section(key, registry, how)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
