"""A stage's own code: the project modules it imports, directly or through each other.

DVC reruns a stage when a file in its `deps` changes, and a resumed stage must not mix outputs of different
code; both need the same answer to "which code is this stage". It is computed here from the imports (parsed,
not executed), so dvc.yaml can be checked against it (tests/test_dvc_yaml.py) and a resume fingerprint covers
exactly what DVC watches.
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages", "tools", "demo")


def _module_file(name: str) -> Path | None:
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pipeline import x`
    return names


def closure(*files: str | Path) -> list[Path]:
    """The given files and every project module they import, relative to the repository root, sorted.
    Package __init__ files are left out: they are empty markers."""
    seen: set[Path] = set()
    todo = [Path(f).resolve() for f in files]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [found for name in _imports(path) if (found := _module_file(name)) is not None]
    return sorted(p.relative_to(ROOT) for p in seen if p.name != "__init__.py")


def code_digest(*files: str | Path) -> str:
    """A digest of a stage's code (`closure`): a resumed run must not mix outputs of different code."""
    digest = hashlib.sha1()
    for path in closure(*files):
        digest.update(str(path).encode() + b"\0" + (ROOT / path).read_bytes())
    return digest.hexdigest()
