"""Docker's ignore-file semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.builder.ignore import IgnoreMatcher, load_ignore


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["*.log"], "a.log", True),
        (["*.log"], "dir/a.log", False),  # * does not cross /
        (["**/*.log"], "dir/sub/a.log", True),
        (["**/*.log"], "a.log", True),  # ** matches zero directories
        (["dir"], "dir/sub/file", True),  # a parent match excludes the subtree
        (["dir/**"], "dir/x/y", True),
        (["/abs/x"], "abs/x", True),  # leading slash dropped
        (["./rel"], "rel", True),  # cleaned
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c]x"], "bx", True),
        (["[!a-c]x"], "bx", False),
        (["*", "!keep"], "keep", False),
        (["*", "!keep"], "other", True),
        (["dir", "!dir/keep.txt"], "dir/keep.txt", False),
        (["dir", "!dir/keep.txt"], "dir/drop.txt", True),
        (["!dir/keep.txt", "dir"], "dir/keep.txt", True),  # last match wins
        (["# comment", ""], "# comment", False),
        (["\\#lit"], "#lit", True),
        (["**"], "anything/at/all", True),
    ],
)
def test_patterns(patterns: list[str], path: str, excluded: bool) -> None:
    assert IgnoreMatcher(patterns).excluded(path) is excluded


def test_descend_only_when_an_exception_can_match() -> None:
    m = IgnoreMatcher(["build", "!build/keep/**"])
    assert m.may_include_below("build")
    assert not IgnoreMatcher(["build"]).may_include_below("build")
    assert not m.may_include_below("other")


def test_kbuildignore_wins_over_dockerignore(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("a\n")
    assert load_ignore(tmp_path).excluded("a")
    (tmp_path / ".kbuildignore").write_text("b\n")
    m = load_ignore(tmp_path)
    assert m.source == ".kbuildignore"
    assert m.excluded("b") and not m.excluded("a")
