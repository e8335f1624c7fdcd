"""The repository's rules that code can check: tests mirror modules, imports go one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "learner", "cluster")


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py")


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {name.split(".")[0] for name in names}


def test_every_module_has_a_test_file_that_mirrors_it():
    missing = [
        str(p.relative_to(ROOT))
        for p in modules()
        if not (ROOT / "tests" / p.parent.relative_to(ROOT) / f"test_{p.name}").exists()
    ]
    assert len(modules()) >= 59 and missing == []  # the count guards against a glob that finds nothing


def test_ray_only_in_cluster_and_the_learner_never_imports_actors():
    forbidden = {"actors": {"ray"}, "learner": {"ray", "actors"}}
    offenders = {
        str(p.relative_to(ROOT)): sorted(imported_roots(p) & forbidden[p.relative_to(ROOT).parts[0]])
        for p in modules()
        if p.relative_to(ROOT).parts[0] in forbidden
    }
    assert {path: found for path, found in offenders.items() if found} == {}
