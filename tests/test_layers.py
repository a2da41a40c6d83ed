"""Imports never go up a layer (issue 14): data -> encoding -> modeling -> training -> library -> commands/cli.

Every module under src/rekit is parsed with `ast` (module-level imports and those inside functions
alike, TYPE_CHECKING blocks included); a module may import its own layer or a lower one.
docs/architecture.md draws the same map.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A package name ("data") covers every module under it; a longer prefix wins.
LAYERS: dict[str, int] = {
    # L0 core: no rekit imports above this line
    "rekit.errors": 0, "rekit.io": 0, "rekit.convert": 0, "rekit.config": 0, "rekit.configfile": 0, "rekit.lock": 0,
    "rekit.runtime": 0,
    # L1 data, the run-directory format (read and write; torch-free) and the model cards written into it
    "rekit.data": 1, "rekit.rundir": 1, "rekit.modelcard": 1,
    # L2 features and scores
    "rekit.encoding": 2, "rekit.metrics": 2,
    # L3 the model
    "rekit.modeling": 3, "rekit.tracking": 3,
    # L4 training
    "rekit.training": 4,
    # L5 the library on top of trained runs
    "rekit.ensemble": 5, "rekit.predict": 5, "rekit.adapt": 5, "rekit.baselines": 5,
    "rekit.api": 5, "rekit.export": 5,
    # L6 applications built from the library
    "rekit.tuning": 6, "rekit.report": 6, "rekit.serve": 6, "rekit.demo": 6,
    # L7 the command line
    "rekit.commands": 7, "rekit.cli": 7,
    # the package itself: lazy re-exports of the library
    "rekit": 8,
}
ALLOWED = {"rekit.__version__"}  # `from rekit import __version__` is fine anywhere


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(f"{module} has no layer; add it to LAYERS in tests/test_layers.py (and docs/architecture.md)")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rekit_imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every rekit import in the file, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from rekit.x import y` may name a submodule y: rekit.x.y if that file exists, else rekit.x
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (SRC / Path(*sub.split("."))).with_suffix(".py").is_file() or (
                    SRC / Path(*sub.split(".")) / "__init__.py").is_file()
                found.append((node.lineno, sub if (is_module or base == "rekit") else base))
    return [(line, m) for line, m in found if m == "rekit" or m.startswith("rekit.")]


def upward_imports() -> list[str]:
    bad = []
    for path in sorted((SRC / "rekit").rglob("*.py")):
        module = module_name(path)
        own = layer_of(module)
        for line, target in rekit_imports(path, module):
            if target in ALLOWED:
                continue
            if layer_of(target) > own:
                bad.append(f"{path.relative_to(SRC)}:{line}: {module} (L{own}) imports {target} (L{layer_of(target)})")
    return bad


def test_every_module_has_a_layer():
    for path in (SRC / "rekit").rglob("*.py"):
        layer_of(module_name(path))


def test_no_import_goes_up_a_layer():
    bad = upward_imports()
    assert not bad, "imports that go up a layer:\n" + "\n".join(bad)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from rekit.training.losses import make_loss\n    import rekit.cli\n")
    assert [m for _, m in rekit_imports(f, "x")] == ["rekit.training.losses", "rekit.cli"]
