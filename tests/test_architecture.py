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
# --------------------------------------------------------------------------- import cycles
#
# Inside a package, modules import each other one way only: no cycle, not even one that
# an import inside a function body or under ``if TYPE_CHECKING:`` hides from the
# interpreter (both still tie the two modules together).


def _module_names(root: Path) -> dict[str, Path]:
    """``kbuild.x.y`` -> file, for every module and package ``__init__`` under ``root``."""
    top = root
    while (top.parent / "__init__.py").exists():
        top = top.parent
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(top.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _import_targets(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names}
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            targets.add(sub if sub in modules else module)
    return {t for t in targets if t in modules and t != name}


def import_cycles(root: Path) -> list[list[str]]:
    """Every cycle of the module import graph under the package directory ``root``."""
    modules = _module_names(root)
    graph = {name: sorted(_import_targets(name, path, modules))
             for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(cycles)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_import_cycle_inside_a_package(package: str) -> None:
    cycles = import_cycles(PACKAGE / package)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_checker_sees_hidden_cycles(tmp_path: Path) -> None:
    pkg = tmp_path / "kbuild" / "demo"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "kbuild" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from kbuild.demo import a\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d.py").write_text("from ..c import x\nfrom .. import sub\n")
    assert import_cycles(pkg) == [["kbuild.demo.a", "kbuild.demo.b"]]
    (pkg / "c.py").write_text("from .sub import d\n")
    assert import_cycles(pkg) == [["kbuild.demo.a", "kbuild.demo.b"],
                                  ["kbuild.demo.c", "kbuild.demo.sub.d"]]
