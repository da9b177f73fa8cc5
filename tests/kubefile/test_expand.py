"""Variable expansion and quote removal."""

from __future__ import annotations

import pytest

from kbuild.errors import KubefileError
from kbuild.kubefile import (
    Add,
    Copy,
    Env,
    From,
    Position,
    Run,
    expand,
    expand_instruction,
    parse,
    unquote,
    variables,
)

POS = Position("Kubefile", 7, 3)
ENV = {"A": "alpha", "EMPTY": "", "ARCH": "arm64"}


@pytest.mark.parametrize(
    ("word", "want"),
    [
        ("$A", "alpha"),
        ("${A}", "alpha"),
        ("x${A}y", "xalphay"),
        ("$A/b", "alpha/b"),
        ("$Ab", ""),
        ("$UNKNOWN", ""),
        ("${UNKNOWN}", ""),
        ("${A:-d}", "alpha"),
        ("${EMPTY:-d}", "d"),
        ("${UNKNOWN:-d}", "d"),
        ("${A-d}", "alpha"),
        ("${EMPTY-d}", ""),
        ("${UNKNOWN-d}", "d"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNKNOWN:+alt}", ""),
        ("${A+alt}", "alt"),
        ("${EMPTY+alt}", "alt"),
        ("${UNKNOWN+alt}", ""),
        ("${UNKNOWN:-${A}-x}", "alpha-x"),
        ("${UNKNOWN:-a\\}b}", "a}b"),
        ("\\$A", "$A"),
        ("\\${A}", "${A}"),
        ("a\\\\b", "a\\b"),
        ("C:\\dir", "C:\\dir"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1x", "$1x"),
        ("100$-", "100$-"),
        ("bin/${ARCH}/kubectl", "bin/arm64/kubectl"),
        ("${A:?must be set}", "alpha"),
    ],
)
def test_expand(word: str, want: str) -> None:
    assert expand(word, ENV, pos=POS) == want


def test_backtick_escape() -> None:
    assert expand("`$A and C:\\x", ENV, pos=POS, escape="`") == "$A and C:\\x"
    assert expand("``", ENV, pos=POS, escape="`") == "`"


@pytest.mark.parametrize(
    ("word", "problem"),
    [
        ("${A", "missing '}'"),
        ("${", "missing '}'"),
        ("${A:-x", "missing '}'"),
        ("${}", "expected a variable name after '${', found '}'"),
        ("${A:x}", "unsupported modifier ':'"),
        ("${A%x}", "unsupported modifier '%'"),
        ("${1}", "expected a variable name"),
    ],
)
def test_malformed_raises_with_position(word: str, problem: str) -> None:
    with pytest.raises(KubefileError) as info:
        expand(word, ENV, pos=POS)
    assert problem in info.value.message
    assert (info.value.filename, info.value.line, info.value.column) == ("Kubefile", 7, 3)


def test_required_variable() -> None:
    with pytest.raises(KubefileError) as info:
        expand("${VERSION:?give --build-arg VERSION=...}", {}, pos=POS)
    assert info.value.message == "VERSION: give --build-arg VERSION=..."
    with pytest.raises(KubefileError, match="EMPTY: is not set"):
        expand("${EMPTY:?}", ENV, pos=POS)
    assert expand("${EMPTY?}", ENV, pos=POS) == ""


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    word = "${A:-" * 500 + "x" + "}" * 500
    with pytest.raises(KubefileError, match="nested too deeply"):
        expand(word, {}, pos=POS)


@pytest.mark.parametrize(
    ("raw", "stored", "expanded"),
    [
        ("plain", "plain", "plain"),
        ('"a b"', "a b", "a b"),
        ("'a b'", "a b", "a b"),
        ("'$A'", "\\$A", "$A"),
        ('"$A"', "$A", "alpha"),
        ('"\\$A"', "\\$A", "$A"),
        ("\\$A", "\\$A", "$A"),
        ('"a\\"b"', 'a"b', 'a"b'),
        ("a\\ b", "a b", "a b"),
        ("'a\\b'", "a\\\\b", "a\\b"),
        ('"a\\b"', "a\\\\b", "a\\b"),
        ("a\\\\b", "a\\\\b", "a\\b"),
        ('x"y"z', "xyz", "xyz"),
    ],
)
def test_unquote_then_expand(raw: str, stored: str, expanded: str) -> None:
    assert unquote(raw) == stored
    assert expand(stored, ENV, pos=POS) == expanded


def test_variables() -> None:
    assert variables("$A ${B:-$C} \\$D ${A}") == ["A", "B", "C"]


def test_expand_instruction_fields() -> None:
    kf = parse(
        "ARG BASE\nFROM x AS b\nFROM --platform=$PLAT ${BASE}:v1 AS c\n"
        "ENV X=$A Y='$A'\n"
        "COPY --from=b --chmod=$MODE bin/${ARCH}/x $DEST\n"
        "ADD --checksum=$SUM a b\n"
        "RUN echo $A\n",
    )
    env = {"BASE": "kubernetes", "PLAT": "linux/arm64", "A": "alpha", "ARCH": "arm64",
           "MODE": "0755", "DEST": "/usr/bin/", "SUM": "sha256:x"}  # fmt: skip
    base = expand_instruction(kf.stages[1].base, env)
    assert isinstance(base, From)
    assert (base.image, base.platform, base.alias) == ("kubernetes:v1", "linux/arm64", "c")
    envi, copy, add, run = (expand_instruction(i, env) for i in kf.stages[1].instructions)
    assert isinstance(envi, Env) and envi.pairs == (("X", "alpha"), ("Y", "$A"))
    assert isinstance(copy, Copy)
    assert (copy.sources, copy.dest, copy.chmod) == (("bin/arm64/x",), "/usr/bin/", "0755")
    assert isinstance(add, Add) and add.checksum == "sha256:x"
    assert isinstance(run, Run) and run.command == "echo $A"
    assert run is kf.stages[1].instructions[3]
