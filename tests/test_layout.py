"""The package layout keeps its rules (docs/ARCHITECTURE.md): parts import only downwards, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import scl_lle

PACKAGE = Path(scl_lle.__file__).parent
# Level of each part; a module may import parts of a lower level, or of the same level where listed below.
LEVELS = {"core": 0, "paths": 0, "_renamed": 0, "io": 1, "defaults": 2, "models": 3, "engine": 4}
LEVELS |= {"apps": 5, "train": 5, "evaluation": 5, "cli": 6}
SIDEWAYS = {("train", "evaluation"), ("evaluation", "train")}  # validation metrics; evaluation data sets
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _part(parts: list[str]) -> str:
    return parts[1] if len(parts) > 1 else "root"


def _imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, the imported module as a package-relative list of names) for every relative import of ``path``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = package[: len(package) - (node.level - 1)]
            found.append((node.lineno, base + (node.module.split(".") if node.module else [])))
    return found


def test_parts_import_only_downwards() -> None:
    wrong = []
    for path in _modules():
        here = _part(list(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if here not in LEVELS:
            continue  # the package face (__init__, __main__) and the old-path re-exports
        for line, target in _imports(path):
            there = _part(target)
            if there == here or there not in LEVELS:
                continue
            if LEVELS[there] > LEVELS[here] or (LEVELS[there] == LEVELS[here] and (here, there) not in SIDEWAYS):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({here}) imports {'.'.join(target)} ({there})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_are_short(path: Path) -> None:
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            reason = "Long because" in (ast.get_docstring(node) or "")
            assert length <= MAX_FUNCTION_LINES or reason, f"{path.name}:{node.name} is {length} lines, no reason"


def test_relative_imports_are_resolved_as_python_does() -> None:
    """A check of the check: ``..models.dcenet`` in engine/enhancer.py is scl_lle.models.dcenet, ``.tiling`` is
    scl_lle.engine.tiling, and an import two levels up from apps/serve reaches scl_lle itself."""
    engine = [t for _, t in _imports(PACKAGE / "engine" / "enhancer.py")]
    assert ["scl_lle", "models", "dcenet"] in engine and ["scl_lle", "engine", "tiling"] in engine
    serve = [t for _, t in _imports(PACKAGE / "apps" / "serve" / "work.py")]
    assert any(t[:2] == ["scl_lle", "engine"] for t in serve)
    assert all(_part(t) in LEVELS or t == ["scl_lle"] for t in engine + serve)
