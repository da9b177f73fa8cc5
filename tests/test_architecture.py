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


RUNTIME = PACKAGE / "runtime"
#: runtime sub-package -> the sub-packages it must not import
RUNTIME_RULES: dict[str, tuple[str, ...]] = {
    "generic": ("kbuild.runtime.drivers", "kbuild.runtime.providers"),
    "drivers": ("kbuild.runtime.providers",),
    "providers": ("kbuild.runtime.drivers",),
}


def _runtime_part(path: Path) -> str:
    rel = path.relative_to(RUNTIME).parts
    return rel[0] if rel[0] in ("drivers", "providers") else "generic"


@pytest.mark.parametrize("part", sorted(RUNTIME_RULES))
def test_generic_runtime_imports_no_driver_or_provider(part: str) -> None:
    """The life cycle knows drivers and providers only through their protocols;
    a driver knows no provider and a provider no driver."""
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: imports {target}"
        for path in sorted(RUNTIME.rglob("*.py"))
        if _runtime_part(path) == part
        for line, target in _kbuild_imports(path)
        if any(target == f or target.startswith(f + ".") for f in RUNTIME_RULES[part])
    ]
    assert not bad, "\n".join(bad)


def test_the_runtime_checker_sees_a_driver_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from kbuild.runtime.drivers.kubernetes import KubernetesDriver\n")
    (target,) = [t for _, t in _kbuild_imports(module)]
    assert target.startswith(RUNTIME_RULES["generic"][0])
