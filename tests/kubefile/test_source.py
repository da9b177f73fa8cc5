"""Comments, blank lines, continuations, the escape directive, positions."""

from __future__ import annotations

from kbuild.kubefile import Copy, Env, Run, Workdir, expand_instruction, parse
from tests.kubefile.conftest import error


def test_comments_blank_lines_and_positions() -> None:
    kf = parse("# a comment\n\nFROM a\n   # indented comment\n\n  RUN echo # not a comment\n")
    (run,) = kf.stages[0].instructions
    assert isinstance(run, Run)
    assert run.command == "echo # not a comment"
    assert (run.pos.line, run.pos.column, run.pos.end_line) == (6, 3, 6)
    assert kf.stages[0].base.pos.line == 3


def test_continuation_with_comments_blank_lines_and_trailing_blanks() -> None:
    kf = parse(
        "FROM a\n"
        "RUN apt-get update \\  \n"
        "# comment inside the continuation\n"
        "\n"
        "    && apt-get install -y \\\n"
        "       curl\n"
        "COPY a b\n"
    )
    run, copy = kf.stages[0].instructions
    assert isinstance(run, Run)
    assert run.command == "apt-get update     && apt-get install -y        curl"
    assert (run.pos.line, run.pos.end_line) == (2, 6)
    assert copy.pos.line == 7


def test_continuation_at_end_of_file() -> None:
    kf = parse("FROM a\nCOPY a \\\n  b \\\n")
    copy = kf.stages[0].instructions[0]
    assert isinstance(copy, Copy) and copy.sources == ("a",) and copy.dest == "b"


def test_crlf_line_endings() -> None:
    kf = parse("FROM a\r\nENV A=1 \\\r\n  B=2\r\nWORKDIR /x\r\n")
    env, wd = kf.stages[0].instructions
    assert isinstance(env, Env) and env.pairs == (("A", "1"), ("B", "2"))
    assert isinstance(wd, Workdir) and wd.path == "/x" and wd.pos.line == 4


def test_escape_directive_backtick() -> None:
    kf = parse(
        "# escape=`\n"
        "FROM a\n"
        "COPY C:\\src\\app `\n"
        "     C:\\dest\\\n"
        'ENV P=`$HOME Q=a`` R="x`"y"\n'
        "RUN dir `\n"
        "  /s\n"
    )
    assert kf.escape == "`"
    copy, env, run = kf.stages[0].instructions
    copy, env = (expand_instruction(i, {"HOME": "/root"}) for i in (copy, env))
    assert isinstance(copy, Copy)
    assert copy.sources == ("C:\\src\\app",) and copy.dest == "C:\\dest\\"
    assert isinstance(env, Env)
    assert env.pairs == (("P", "$HOME"), ("Q", "a`"), ("R", 'x"y'))
    assert isinstance(run, Run) and run.command == "dir   /s"


def test_directives_only_at_the_top() -> None:
    kf = parse("FROM a\n# escape=`\nCOPY a \\\n b\n")
    assert kf.escape == "\\"
    copy = kf.stages[0].instructions[0]
    assert isinstance(copy, Copy) and copy.dest == "b"
    kf = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\n")
    assert kf.escape == "`"
    kf = parse("# some comment\n# escape=`\nFROM a\n")
    assert kf.escape == "\\"


def test_unknown_directive_ends_directives() -> None:
    kf = parse("# foo=bar\n# escape=`\nFROM a\n")
    assert kf.escape == "\\"


def test_heredoc_body_is_not_parsed_as_instructions() -> None:
    kf = parse("FROM a\nRUN <<EOF\nFROM evil\nLAUNCH [\nEOF\nRUN x\n")
    run, run2 = kf.stages[0].instructions
    assert isinstance(run, Run) and run.heredocs == (("EOF", "FROM evil\nLAUNCH [\n"),)
    assert run2.pos.line == 6
    assert len(kf.stages) == 1


def test_heredoc_exec_form_has_none() -> None:
    kf = parse('FROM a\nRUN ["cat", "<<EOF"]\nRUN x\n')
    run = kf.stages[0].instructions[0]
    assert isinstance(run, Run) and run.heredocs == () and run.argv == ("cat", "<<EOF")


def test_error_column_with_tabs_and_indent() -> None:
    err = error("FROM a\n\tCOPPY a b\n")
    assert (err.line, err.column) == (2, 2)


def test_byte_order_mark_is_ignored() -> None:
    kf = parse("\ufeffFROM a\nCOPY a b\n")
    assert kf.stages[0].base.image == "a"
    assert kf.stages[0].instructions[0].pos.line == 2


def test_parser_is_built_once_per_escape() -> None:
    from kbuild.kubefile import _grammar

    parse("FROM a\n")
    parse("# escape=`\nFROM a\n")
    first = (_grammar.parser("\\"), _grammar.parser("`"))
    parse("FROM b\nRUN x\n")
    assert (_grammar.parser("\\"), _grammar.parser("`")) == first
    assert first[0] is not first[1]
