"""The package structure a newcomer relies on (documentation/architecture.md).

* Imports point down the layer order only (no back arrows between packages).
* No function-level import of an mrisr module (they hide package cycles), except the
  whitelisted ones, each with its reason.

Module and function sizes are not checked: a class lives in one file unless it has a
separable responsibility (documentation/architecture.md), whatever its length.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "mrisr"

#: low to high: a package may import its own modules and those of lower layers only
LAYERS: tuple[tuple[str, ...], ...] = (
    ("utilities",),
    ("paths", "plans"),  # the ground floor: the path schema and typed plans
    ("imageio",),
    ("dataset",),
    ("networks",),
    ("preprocessing",),
    ("metrics",),
    ("throughplane",),
    ("degradation",),
    ("planning",),
    ("inference",),
    ("training",),
    ("evaluation",),
    ("cli",),
)

#: function-level imports of mrisr modules allowed: (importing module or package, imported
#: module or package) -> why. None of them hides a cycle: each points down the layer order.
FUNCTION_IMPORT_WHITELIST = {
    ("mrisr.cli", "mrisr"): "entry points import their API only once the arguments parse, so "
    "--help and argument errors answer without loading torch; cli is the top layer",
}


def _layer(package: str) -> int:
    for i, names in enumerate(LAYERS):
        if package in names:
            return i
    raise AssertionError(f"package '{package}' is not in the layer order of test_architecture")


def _modules():
    for f in sorted(ROOT.rglob("*.py")):
        rel = f.relative_to(ROOT.parent).with_suffix("")
        yield ".".join(rel.parts), f, ast.parse(f.read_text(encoding="utf-8"))


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.module:
        if node.module == "mrisr":
            return [f"mrisr.{a.name}" for a in node.names]
        return [node.module]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return []


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer():
    for module, _, _ in _modules():
        if module != "mrisr.__init__":
            _layer(_package(module))


def test_no_upward_imports():
    arrows = []
    for module, _, tree in _modules():
        if module == "mrisr.__init__":
            continue
        mine = _layer(_package(module))
        for node in ast.walk(tree):
            for target in _imported(node):
                if target.startswith("mrisr.") and _layer(_package(target)) > mine:
                    arrows.append(f"{module}:{node.lineno} imports {target}")
    assert not arrows, "imports against the layer order:\n" + "\n".join(arrows)


def test_no_function_level_imports_of_mrisr_modules():
    hidden = []
    for module, _, tree in _modules():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                for target in _imported(node):
                    allowed = any(
                        module.startswith(m) and target.startswith(t)
                        for m, t in FUNCTION_IMPORT_WHITELIST
                    )
                    if target.startswith("mrisr") and not allowed:
                        hidden.append(f"{module}:{node.lineno} ({fn.name}) imports {target}")
    assert not hidden, "function-level imports (move them to the top):\n" + "\n".join(
        sorted(set(hidden))
    )
