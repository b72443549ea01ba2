"""The layering the README's architecture section promises, checked on the source: a capability
folder uses another only through its package's public API, and the base layer uses none."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CAPABILITIES = ("migrate", "sync", "validate", "convert")


def _imports(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) of every import in a folder, lazy ones inside functions included."""
    found = []
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.append((path.name, node.module))
                found += [(path.name, f"{node.module}.{alias.name}") for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
    return found


def _capability_of(module: str) -> tuple[str, str] | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[0] == "mlflow_sync" and parts[1] in CAPABILITIES:
        return parts[1], ".".join(parts[2:])
    return None


@pytest.mark.parametrize("folder", CAPABILITIES)
def test_a_capability_uses_another_only_through_its_package(folder):
    wrong = []
    for file, module in _imports(folder):
        target = _capability_of(module)
        if target is None or target[0] == folder or not target[1]:
            continue
        package = importlib.import_module(f"mlflow_sync.{target[0]}")
        name = target[1].split(".")[0]
        if "." in target[1] or name not in getattr(package, "__all__", ()):
            wrong.append(f"{folder}/{file} imports mlflow_sync.{target[0]}.{target[1]}")
    assert wrong == []


def test_the_base_layer_imports_no_capability():
    assert [f"mlflow_sync/{file}: {module}" for file, module in _imports("mlflow_sync")
            if _capability_of(module) and file != "cli.py"] == []  # cli.py registers the capabilities' commands
