"""Imports only go down the layers (docs/CONTRACTS.md, "Layering"):

    launch → (shard_tools | kiclip.train | kiclip.inference) → kiclip.model / kiclip.data
           → kiclip_kernels (the kernels/ folder)

Read from the source with ast (every import, function-level ones included), followed through
the modules each one reaches, so a detour through a shared kiclip module is caught too.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kiclip", "shard_tools", "kiclip_kernels")
# Import name → folder, where they differ (setup.cfg package_dir).
FOLDERS = {"kiclip_kernels": "kernels"}


def folder_parts(name: str) -> list[str]:
    first, *rest = name.split(".")
    return [FOLDERS.get(first, first), *rest]


def module_file(name: str) -> Path | None:
    """The file that defines module ``name`` in this repository, or None (outside it)."""
    base = ROOT.joinpath(*folder_parts(name))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    names = {folder: name for name, folder in FOLDERS.items()}
    parts = (names.get(parts[0], parts[0]), *parts[1:])
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def with_parents(name: str) -> list[str]:
    """``a.b.c`` → [a, a.b, a.b.c]: importing a module runs its packages' ``__init__`` too."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def direct_imports(name: str) -> frozenset[str]:
    """Repository modules that module ``name`` imports anywhere in its source."""
    path = module_file(name)
    if path is None:
        return frozenset()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            found.update(m for m in with_parents(target) if module_file(m) is not None)
    found.discard(name)
    return frozenset(found)


def reachable(name: str) -> set[str]:
    """Every repository module importing ``name`` can end up importing."""
    seen, todo = set(), [name]
    while todo:
        for module in direct_imports(todo.pop()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def modules_under(prefix: str) -> list[str]:
    base = ROOT.joinpath(*folder_parts(prefix))
    files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
    return [module_name(f) for f in files]


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# (layer, what no module of it may reach, directly or through another module)
RULES = [
    ("kiclip_kernels", ("kiclip", "shard_tools", "launch")),
    ("kiclip.model", ("kiclip.train", "kiclip.inference", "shard_tools", "launch")),
    ("kiclip.data", ("kiclip.train", "kiclip.inference", "shard_tools", "launch")),
    ("kiclip.inference", ("kiclip.train", "shard_tools", "launch")),
    ("kiclip.train", ("kiclip.inference", "shard_tools", "launch")),
    # The rest of the package; kiclip.science, the experiments layer above it, is checked next.
    ("kiclip", ("kiclip.science", "shard_tools", "launch")),
    # Experiments: may use shard_tools (the synthetic world) and kiclip.train, not the commands.
    ("kiclip.science", ("launch",)),
]
# Layers that a wider rule above would otherwise cover: they have their own rule.
OWN_RULE = {"kiclip": ("kiclip.science",)}


@pytest.mark.parametrize("layer, forbidden", RULES, ids=[layer for layer, _ in RULES])
def test_imports_only_go_down(layer, forbidden):
    wrong = {module: sorted(m for m in reachable(module) if within(m, forbidden))
             for module in modules_under(layer) if not within(module, OWN_RULE.get(layer, ()))}
    assert not {m: found for m, found in wrong.items() if found}


def test_the_checker_sees_function_level_and_indirect_imports():
    # kiclip.train.assemble imports kiclip.model at module level, kiclip.model.build reaches
    # kiclip.config only under TYPE_CHECKING, shard_tools.inspect_shards imports its --decode
    # part inside a function: each must be seen, or the rules above test nothing.
    assert "kiclip.model.build" in reachable("kiclip.train.assemble")
    assert "kiclip.config" in direct_imports("kiclip.model.build")
    assert "shard_tools.inspect_decode" in direct_imports("shard_tools.inspect_shards")
    assert "kiclip.data.preview" in reachable("shard_tools.inspect_shards")
    # The kernels folder installs as kiclip_kernels: its imports must be followed too.
    assert "kiclip_kernels.dispatch" in reachable("kiclip.losses")
