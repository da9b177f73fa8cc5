"""The rules sealer enforces, checked at parse time with positions."""

from __future__ import annotations

import pytest

from kbuild.kubefile import parse
from tests.kubefile.conftest import error


def test_launch_must_be_last() -> None:
    err = error('FROM a\nAPP x y\nLAUNCH ["x"]\nCOPY a b\n')
    assert err.message == "COPY after LAUNCH: LAUNCH must be the last instruction of the Kubefile"
    assert err.hint == "move LAUNCH (line 3) to the end"
    assert (err.line, err.column) == (4, 1)


def test_cmds_must_be_last_even_before_a_new_stage() -> None:
    err = error('FROM a\nCMDS ["x"]\nFROM b\n')
    assert err.message == "FROM after CMDS: CMDS must be the last instruction of the Kubefile"
    assert err.line == 3


def test_launch_only_once() -> None:
    err = error('FROM a\nAPP x y\nLAUNCH ["x"]\nLAUNCH ["x"]\n')
    assert err.message == "LAUNCH may appear only once (first on line 3)"
    assert err.line == 4


def test_cmds_only_once() -> None:
    err = error('FROM a\nCMDS ["x"]\nCMDS ["y"]\n')
    assert err.message == "CMDS may appear only once (first on line 2)"


def test_launch_and_cmds_not_both() -> None:
    err = error('FROM a\nAPP x y\nCMDS ["a"]\nLAUNCH ["x"]\n')
    assert err.message == "LAUNCH and CMDS cannot both be used (CMDS on line 3)"
    assert err.line == 4


@pytest.mark.parametrize("final", ['LAUNCH ["x"]', 'CMDS ["kubectl get pods"]'])
def test_cmd_not_with_launch_or_cmds(final: str) -> None:
    err = error(f"FROM a\nAPP x y\nCMD kubectl apply -f x\n{final}\n")
    kw = final.split()[0]
    assert err.message == f"{kw} cannot be combined with CMD (line 3)"
    assert err.line == 4


def test_cmd_in_a_builder_stage_does_not_block_launch() -> None:
    kf = parse('FROM a AS b\nCMD x\nFROM c\nAPP x y\nLAUNCH ["x"]\n')
    assert len(kf.stages) == 2


def test_several_cmd_are_allowed() -> None:
    kf = parse("FROM a\nCMD kubectl apply -f a\nCMD kubectl apply -f b\n")
    assert len(kf.stages[0].instructions) == 2


@pytest.mark.parametrize("kind", ['APPCMDS dash ["x"]', "APPENV dash A=1"])
def test_appcmds_appenv_need_a_declared_app(kind: str) -> None:
    err = error(f"FROM scratch\nAPP dashboard y\n{kind}\n")
    assert err.message == (
        f"{kind.split()[0]} for the app 'dash', which is not declared before it "
        "with APP, CNI or CSI"
    )
    assert (err.line, err.column) == (3, len(kind.split()[0]) + 2)
    assert err.hint == "did you mean dashboard?"


def test_appcmds_before_app_is_refused() -> None:
    err = error('FROM scratch\nAPPCMDS x ["y"]\nAPP x y\n')
    assert err.line == 2 and "not declared before it" in err.message


@pytest.mark.parametrize("decl", ["APP", "CNI", "CSI"])
def test_cni_csi_declare_apps(decl: str) -> None:
    kf = parse(f'FROM a\n{decl} net y\nAPPENV net A=1\nAPPCMDS net ["z"]\nLAUNCH ["net"]\n')
    assert len(kf.stages[0].instructions) == 4


def test_launch_names_must_be_declared() -> None:
    err = error('FROM scratch\nAPP calico y\nLAUNCH ["calico", "nginx"]\n')
    assert err.message == (
        "LAUNCH names the app 'nginx', which is not declared before it with APP, CNI or CSI"
    )
    assert (err.line, err.column) == (3, 8)


def test_apps_of_an_earlier_stage_are_inherited_by_from() -> None:
    kf = parse('FROM k AS apps\nAPP x y\nFROM apps\nAPPENV x A=1\nLAUNCH ["x"]\n')
    assert len(kf.stages) == 2
    err = error('FROM scratch AS apps\nAPP x y\nFROM scratch\nLAUNCH ["x"]\n')
    assert "not declared" in err.message
    err = error('FROM scratch AS apps\nAPP x y\nFROM apps\nLAUNCH ["y"]\n')
    assert "not declared" in err.message


@pytest.mark.parametrize(
    "text",
    [
        'FROM my-app-image:v1\nLAUNCH ["nginx"]\n',
        'FROM my-app-image:v1\nAPPCMDS nginx ["helm install nginx ."]\nAPPENV nginx A=1\n',
        'FROM my-app-image:v1 AS base\nAPP extra y\nFROM base\nLAUNCH ["nginx", "extra"]\n',
    ],
)
def test_apps_inherited_from_a_base_image_are_left_to_the_builder(text: str) -> None:
    # sealer's common pattern: an app image FROM another app image, launching
    # the base's apps. The parser cannot see them; the builder checks.
    kf = parse(text)
    assert kf.stages[-1].instructions


@pytest.mark.parametrize("name", ["Dash", "-dash", "dash-", "da_sh", "a" * 64, "da.sh"])
def test_invalid_app_names(name: str) -> None:
    err = error(f"FROM a\nAPP {name} y\n")
    assert err.message == f"invalid app name {name!r}"
    assert (err.line, err.column) == (2, 5)


def test_invalid_app_name_in_launch() -> None:
    err = error('FROM a\nLAUNCH ["Bad"]\n')
    assert err.message == "invalid app name 'Bad'"


def test_launch_names_an_app_twice() -> None:
    err = error('FROM a\nAPP x y\nLAUNCH ["x", "x"]\n')
    assert err.message == "LAUNCH names the app 'x' twice"


def test_only_arg_before_first_from() -> None:
    err = error("ARG A\nENV B=1\nFROM a\n")
    assert err.message == "ENV before the first FROM: only ARG may come before FROM"
    assert (err.line, err.column) == (2, 1)


def test_global_args_and_stage_split() -> None:
    kf = parse("ARG V=1\nARG W\nFROM a AS one\nARG V\nRUN x\nFROM b\nCOPY --from=one a b\n")
    assert [a.name for a in kf.global_args] == ["V", "W"]
    assert [s.name for s in kf.stages] == ["one", "1"]
    assert [type(i).__name__ for i in kf.stages[0].instructions] == ["Arg", "Run"]


@pytest.mark.parametrize(
    "text",
    ["", "\n\n  \n", "# just a comment\n", "# escape=`\n"],
)
def test_empty_kubefile(text: str) -> None:
    err = error(text)
    assert err.message == "the Kubefile is empty; it must start with FROM"


def test_no_from() -> None:
    err = error("ARG A=1\n")
    assert err.message == "the Kubefile has no FROM instruction"


def test_duplicate_stage_names() -> None:
    err = error("FROM a AS x\nFROM b AS X\n")
    assert err.message == "duplicate stage name 'x' (first used on line 1)"
    assert (err.line, err.column) == (2, 11)


def test_invalid_stage_name() -> None:
    err = error("FROM a AS 1x\n")
    assert err.message == "invalid stage name '1x'"


@pytest.mark.parametrize(
    ("copy", "message"),
    [
        ("COPY --from=2 a b", "--from=2 must name an earlier stage (this is stage 1)"),
        ("COPY --from=1 a b", "--from=1 must name an earlier stage (this is stage 1)"),
        ("COPY --from=two a b", "--from=two names the stage it is in"),
        (
            "COPY --from=three a b",
            "--from=three names a stage that is defined after this instruction",
        ),
        ("COPY --from=onne a b", "no stage named 'onne' before this instruction"),
    ],
)
def test_copy_from_checks(copy: str, message: str) -> None:
    err = error(f"FROM a AS one\nFROM b AS two\n{copy}\nFROM c AS three\n")
    assert err.message == message
    assert (err.line, err.column) == (3, 6)


def test_copy_from_suggestion_and_allowed_forms() -> None:
    err = error("FROM a AS builder\nFROM b\nCOPY --from=buildr a b\n")
    assert err.hint == "did you mean builder?"
    kf = parse(
        "FROM a AS builder\nFROM b\nCOPY --from=builder a b\nCOPY --from=0 a b\n"
        "COPY --from=BUILDER a b\nCOPY --from=nginx:1.25 a b\nCOPY --from=$STAGE a b\n"
    )
    assert len(kf.stages[1].instructions) == 5
