"""The import rules of DESIGN.md's package table, checked on the source.

Data flows one way: kubefile and layerstore know no other package; the
builder knows kubefile and layerstore; the registry knows the layer store;
the runtime knows the layer store; nothing imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kbuild"

#: package -> the kbuild packages it may import (errors and itself always allowed).
ALLOWED: dict[str, set[str]] = {
    "kubefile": set(),
    "layerstore": set(),
    "builder": {"kubefile", "layerstore"},
    "registry": {"layerstore"},
    "runtime": {"layerstore"},
    "cli": {"kubefile", "layerstore", "builder", "registry", "runtime"},
}


def _kbuild_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("kbuild.")]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module.startswith("kbuild.") or node.module == "kbuild")
        ):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _allowed(package: str, target: str) -> bool:
    rest = target.removeprefix("kbuild.")
    if rest.startswith(("errors", "fsutil", "__version__")) or rest.split(".")[0] == package:
        return True
    return any(rest == a or rest.startswith(a + ".") for a in ALLOWED[package])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_follow_the_design_table(package: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {target}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for line, target in _kbuild_imports(path)
        if not _allowed(package, target)
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from kbuild.builder import build\nimport kbuild.cli.main\n")
    targets = [t for _, t in _kbuild_imports(module)]
    assert targets == ["kbuild.builder.build", "kbuild.cli.main"]
    assert not _allowed("layerstore", targets[0])
    assert not _allowed("runtime", targets[1])
