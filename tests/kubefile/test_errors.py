"""Error messages: position, source line, caret, words instead of terminals."""

from __future__ import annotations

import pytest

from kbuild.errors import KubefileError
from kbuild.kubefile import parse
from tests.kubefile.conftest import error


def test_unknown_instruction_exact_text() -> None:
    err = error("FROM kubernetes:v1.30.2\nCOPPY dashboard.yaml manifests/\n")
    assert str(err) == (
        "Kubefile:2:1: unknown instruction 'COPPY'\n    COPPY dashboard.yaml manifests/\n    ^"
    )
    assert err.hint == "did you mean COPY?"
    assert err.exit_code == 2


def test_unknown_instruction_keeps_case_and_indent() -> None:
    err = error('FROM a\n   lauch ["x"]\n')
    assert err.message == "unknown instruction 'lauch'"
    assert (err.line, err.column) == (2, 4)
    assert err.hint == "did you mean LAUNCH?"


def test_unknown_instruction_without_close_match_lists_instructions() -> None:
    err = error("FROM a\nXYZZY 1\n")
    assert err.hint is not None and err.hint.startswith("instructions: FROM, ARG")


def test_healthcheck_is_unsupported() -> None:
    assert (
        error("FROM a\nHEALTHCHECK CMD true\n").message == "HEALTHCHECK is not supported by kbuild"
    )


def test_missing_image_exact_text() -> None:
    err = error("FROM\n")
    assert str(err) == (
        "Kubefile:1:5: expected an image name (or scratch) after FROM\n    FROM\n        ^"
    )
    assert err.hint == "usage: FROM [--platform=OS/ARCH] IMAGE|scratch [AS NAME]"


def test_filename_in_message() -> None:
    with pytest.raises(KubefileError) as info:
        parse("FROM a b\n", filename="images/app/Kubefile")
    assert str(info.value).startswith("images/app/Kubefile:1:8: unexpected 'b': expected AS NAME")
    assert info.value.filename == "images/app/Kubefile"


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("FROM a AS\n", 1, 10, "expected a stage name after AS"),
        ("FROM a\nCOPY only-source\n", 2, 17, "expected a destination after the source"),
        ("FROM a\nCOPY\n", 2, 5, "expected a source and a destination after COPY"),
        ("FROM a\nENV\n", 2, 4, "expected KEY=VALUE after ENV"),
        ("FROM a\nENV a\n", 2, 6, "expected a value after the name 'a'"),
        ("FROM a\nRUN\n", 2, 4, "expected a command after RUN"),
        ("FROM a\nAPP dash\n", 2, 9, "expected at least one source"),
        ("FROM a\nAPP dash x\nAPPCMDS dash\n", 3, 13, "expected a JSON array of commands"),
        ("FROM a\nAPP a x\nAPPENV a\n", 3, 9, "expected KEY=VALUE after the app name 'a'"),
        ("FROM a\nLAUNCH app\n", 2, 8, "unexpected 'app': expected a JSON array of app names"),
        ("FROM a\nCMDS kubectl apply\n", 2, 6, "unexpected 'kubectl': expected a JSON array"),
        ("FROM a\nCOPY 'a b\n", 2, 6, "unterminated quoted string (missing closing ')"),
        ('FROM a\nLABEL a="x\n', 2, 9, "unterminated quoted string"),
        (
            "FROM --platform=linux/amd64\n",
            1,
            28,
            "expected an image name (or scratch) after the flag",
        ),
        ("FROM a\nWORKDIR\n", 2, 8, "expected a directory after WORKDIR"),
        ("FROM a\nKUBEVERSION\n", 2, 12, "expected a version constraint"),
    ],
)
def test_syntax_error_positions(text: str, line: int, column: int, message: str) -> None:
    err = error(text)
    assert message in err.message
    assert (err.line, err.column) == (line, column)
    assert err.source_line == text.splitlines()[line - 1]
    assert err.hint is not None and err.hint.startswith("usage: ")


def test_error_position_inside_continuation() -> None:
    text = "FROM a\nCOPY --chown=1 \\\n   # a comment\n     --chmod=9x a b\n"
    err = error(text)
    assert (err.line, err.column) == (4, 6)
    assert err.source_line == "     --chmod=9x a b"
    assert str(err).endswith("\n         ^")


def test_error_in_later_stage_of_long_file() -> None:
    text = "FROM a\n" + "RUN true\n" * 50 + "FROM b AS x\nCOPY --from=y a b\n"
    err = error(text)
    assert (err.line, err.column) == (53, 6)
    assert err.message == "no stage named 'y' before this instruction"


def test_bad_variable_reference_points_at_word() -> None:
    err = error("FROM a\nCOPY a ${B c\n")
    assert err.message == "bad variable reference: missing '}'"
    assert (err.line, err.column) == (2, 8)
    err = error("FROM ${:-x}\n")
    assert "expected a variable name" in err.message


def test_bad_escape_directive() -> None:
    err = error("# escape=x\nFROM a\n")
    assert err.message == "invalid escape character 'x': expected \\ or `"
    assert err.line == 1


def test_duplicate_directive() -> None:
    err = error("# escape=`\n# escape=\\\nFROM a\n")
    assert "given twice" in err.message and err.line == 2


def test_unclosed_heredoc() -> None:
    err = error("FROM a\nRUN cat <<END\nbody\n")
    assert err.message == "heredoc 'END' is never closed"
    assert (err.line, err.column) == (2, 9)


def test_almost_json_gets_a_quoting_hint() -> None:
    err = error("FROM a\nLAUNCH ['calico']\n")
    assert err.message == "not a JSON array of strings: \"['calico']\""
    assert (err.line, err.column) == (2, 8)
    assert err.hint is not None
    assert err.hint.startswith("write each item in double quotes")
    assert err.hint.endswith('usage: LAUNCH ["app", ...]')
