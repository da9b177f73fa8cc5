"""Property tests: whatever the text, parse() returns or raises KubefileError.

Runs are derandomized and database-less so CI sees the same examples every
time; every example has a deadline and the module a timeout, so a hang or a
slow (backtracking) path fails the test instead of stalling CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kbuild.errors import KubefileError
from kbuild.kubefile import Kubefile, expand, parse
from kbuild.kubefile._grammar import KEYWORDS
from kbuild.kubefile.instructions import Position

pytestmark = pytest.mark.timeout(300)

DATA = Path(__file__).parent / "data"
EXAMPLES = [p.read_text() for p in sorted(DATA.glob("*.Kubefile"))]

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
)


def check(text: str) -> None:
    """The property: a Kubefile, or a KubefileError pointing into the text."""
    try:
        kf = parse(text)
    except KubefileError as err:
        rendered = str(err)
        assert rendered.startswith("Kubefile")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        assert 0 <= err.line <= len(lines)
        if err.line:
            assert err.column >= 1
            assert err.source_line == lines[err.line - 1]
        return
    assert isinstance(kf, Kubefile)
    assert kf.stages


SPECIAL = st.sampled_from(
    [*list("\\`$\"'{}[]=,:-+?#<> \t\n\r"), "${", "<<", "<<-", "--", "\\\n", "EOF\n", "\n"]
)
WORD = st.one_of(
    st.sampled_from(KEYWORDS).map(lambda k: k + " "),
    st.sampled_from(KEYWORDS).map(lambda k: "\n" + k.lower() + " "),
    SPECIAL,
    st.text(max_size=6),
)


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check(text)


@FUZZ
@given(st.lists(WORD, max_size=80).map("".join))
def test_kubefile_shaped_text(text: str) -> None:
    check("FROM a\n" + text)
    check(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLES))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["insert", "delete", "dup-char", "dup-line", "del-line"]))
        if kind in ("dup-line", "del-line"):
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i : i + 1] = [lines[i], lines[i]] if kind == "dup-line" else []
            text = "\n".join(lines)
            continue
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        if kind == "insert":
            text = text[:i] + draw(st.one_of(SPECIAL, st.characters())) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 5)) :]
        else:
            text = text[: i + 1] + text[i:]
    return text


@FUZZ
@given(mutated())
def test_mutated_real_kubefiles(text: str) -> None:
    check(text)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("${}:-+?AB\\x ")), max_size=60))
def test_expand_never_crashes(word: str) -> None:
    pos = Position("Kubefile", 1, 1)
    try:
        out = expand(word, {"A": "1", "B": ""}, pos=pos)
    except KubefileError as err:
        assert err.line == 1
        return
    assert isinstance(out, str)


def test_pathological_inputs_are_fast() -> None:
    # Inputs that would make a backtracking lexer or a recursive expander blow up.
    for text in [
        "FROM a\nCOPY " + '"' * 5000 + " b\n",
        "FROM a\nENV " + "a" * 20000 + "\n",
        "FROM a\nLAUNCH [" + '"x",' * 5000 + "\n",
        "FROM a\nCOPY " + "${A:-" * 2000 + " b\n",
        "FROM a\n" + "\\\n" * 5000,
        "FROM a\nRUN " + "<<A " * 100 + "\n" + "A\n" * 64,
    ]:
        check(text)
