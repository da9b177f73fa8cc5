"""Sources inside the build context: resolution, globs, refusals, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kbuild.builder.context import SourceTree
from kbuild.builder.ignore import IgnoreMatcher
from kbuild.errors import BuildError

from .util import write_tree


def test_refuses_parent_escape(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    write_tree(tmp_path, {"secret": "s", "ctx/a": "a"})
    tree = SourceTree(ctx, what="build context")
    for src in ("../secret", "a/../../secret", "/../secret"):
        with pytest.raises(BuildError, match="outside the build context") as info:
            tree.resolve(src, "Kubefile:3")
        assert "Kubefile:3" in str(info.value)


def test_refuses_symlinked_parent_leading_out(tmp_path: Path) -> None:
    write_tree(tmp_path, {"outside/secret": "s", "ctx/a": "a"})
    os.symlink(tmp_path / "outside", tmp_path / "ctx" / "out")
    tree = SourceTree(tmp_path / "ctx", what="build context")
    with pytest.raises(BuildError, match="outside the build context through a symlink"):
        tree.resolve("out/secret", "Kubefile:2")


def test_symlink_source_is_kept_as_link(tmp_path: Path) -> None:
    write_tree(tmp_path, {"outside/secret": "s", "ctx/d/f": "f"})
    os.symlink(tmp_path / "outside", tmp_path / "ctx" / "d" / "out")
    tree = SourceTree(tmp_path / "ctx", what="build context")
    [src] = tree.resolve("d", "K:1")
    items = {i.rel: i.kind for i in tree.walk(src)}
    assert items == {"": "dir", "f": "file", "out": "symlink"}  # not followed


def test_globs_and_ignores(tmp_path: Path) -> None:
    write_tree(tmp_path, {"ctx/a.yaml": "", "ctx/b.yaml": "", "ctx/c.txt": "",
                          "ctx/sub/d.yaml": ""})
    tree = SourceTree(tmp_path / "ctx", ignore=IgnoreMatcher(["b.yaml"]), what="build context")
    assert [s.rel for s in tree.resolve("*.yaml", "K:1")] == ["a.yaml"]
    assert [s.rel for s in tree.resolve("*/*.yaml", "K:1")] == ["sub/d.yaml"]
    with pytest.raises(BuildError, match="no file in the build context matches"):
        tree.resolve("*.json", "K:1")
    with pytest.raises(BuildError, match="is excluded from the build context"):
        tree.resolve("b.yaml", "K:1")


def test_walk_skips_ignored_but_keeps_exceptions(tmp_path: Path) -> None:
    write_tree(tmp_path, {"ctx/d/keep.txt": "", "ctx/d/drop.txt": "", "ctx/d/x/y.txt": ""})
    tree = SourceTree(tmp_path / "ctx", ignore=IgnoreMatcher(["d/*", "!d/keep.txt"]),
                      what="build context")
    [src] = tree.resolve("d", "K:1")
    assert [i.rel for i in tree.walk(src)] == ["", "keep.txt"]
