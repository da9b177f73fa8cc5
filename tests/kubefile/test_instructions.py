"""Every instruction and each of its forms parses into the right dataclass."""

from __future__ import annotations

import pytest

from kbuild.kubefile import (
    Add,
    App,
    AppCmds,
    AppEnv,
    Arg,
    Cmd,
    Cmds,
    Cni,
    Copy,
    Csi,
    Entrypoint,
    Env,
    Expose,
    From,
    KubeVersion,
    Label,
    Launch,
    Maintainer,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    parse,
)
from tests.kubefile.conftest import error, one


def test_from_plain_platform_alias() -> None:
    kf = parse("FROM --platform=linux/arm64 kubernetes:v1.30.2 AS base\n")
    base = kf.stages[0].base
    assert base == From(base.pos, base.original, "kubernetes:v1.30.2", "linux/arm64", "base")
    assert kf.stages[0].name == "base"


def test_from_scratch_and_case_insensitive_keywords() -> None:
    kf = parse("from scratch as Builder\nfRoM registry.local:5000/a/b@sha256:" + "a" * 64)
    assert kf.stages[0].base.image == "scratch"
    assert kf.stages[0].base.alias == "builder"
    assert kf.stages[1].base.image == "registry.local:5000/a/b@sha256:" + "a" * 64
    assert kf.stages[1].name == "1"


def test_from_with_variable() -> None:
    kf = parse("ARG BASE=kubernetes\nARG TAG\nFROM ${BASE}:$TAG\n")
    assert [(a.name, a.default) for a in kf.global_args] == [("BASE", "kubernetes"), ("TAG", None)]
    assert kf.stages[0].base.image == "${BASE}:$TAG"


def test_arg_forms() -> None:
    kf = parse('FROM a\nARG X\nARG Y=1 Z="two words"\n')
    args = kf.stages[0].instructions
    assert [(a.name, a.default) for a in args if isinstance(a, Arg)] == [
        ("X", None),
        ("Y", "1"),
        ("Z", "two words"),
    ]
    assert len(args) == 3


def test_env_pairs_with_quotes() -> None:
    instr = one('ENV A=1 B="x y" C=\'$HOME\' D=a\\ b E= F="q\\"q"')
    assert isinstance(instr, Env)
    assert instr.pairs == (
        ("A", "1"),
        ("B", "x y"),
        ("C", "\\$HOME"),
        ("D", "a b"),
        ("E", ""),
        ("F", 'q"q'),
    )


def test_env_legacy_form() -> None:
    instr = one("ENV PATH   /usr/local/bin:/usr/bin   with spaces  ")
    assert isinstance(instr, Env)
    assert instr.pairs == (("PATH", "/usr/local/bin:/usr/bin   with spaces"),)


def test_label_and_maintainer() -> None:
    kf = parse(
        'FROM a\nLABEL "org.opencontainers.image.title"="dash board" version=1\n'
        "LABEL legacy value\nMAINTAINER  Jane Doe <jane@example.com>\n"
    )
    lab, legacy, maint = kf.stages[0].instructions
    assert isinstance(lab, Label) and isinstance(legacy, Label)
    assert lab.pairs == (("org.opencontainers.image.title", "dash board"), ("version", "1"))
    assert legacy.pairs == (("legacy", "value"),)
    assert maint == Maintainer(maint.pos, maint.original, "Jane Doe <jane@example.com>")


def test_copy_flags_sources_globs_arch() -> None:
    kf = parse(
        "FROM a AS build\nFROM b\n"
        "COPY --from=build --chmod=0755 --chown=1000:1000 bin/${ARCH}/kubectl *.yaml"
        " $ARCH/x /usr/bin/\n"
    )
    instr = kf.stages[1].instructions[0]
    assert isinstance(instr, Copy) and not isinstance(instr, Add)
    assert instr.sources == ("bin/${ARCH}/kubectl", "*.yaml", "$ARCH/x")
    assert instr.dest == "/usr/bin/"
    assert (instr.from_stage, instr.chmod, instr.chown) == ("build", "0755", "1000:1000")


def test_copy_json_form() -> None:
    instr = one('COPY ["my file.yaml", "b", "/dest dir/"]')
    assert isinstance(instr, Copy)
    assert instr.sources == ("my file.yaml", "b")
    assert instr.dest == "/dest dir/"


def test_copy_quoted_words() -> None:
    instr = one("COPY 'a b' \"c d\" dest")
    assert isinstance(instr, Copy)
    assert instr.sources == ("a b", "c d")


def test_add_checksum_and_url() -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    instr = one(f"ADD --checksum={digest} --chmod=644 https://example.com/a.tgz /opt/")
    assert isinstance(instr, Add)
    assert instr.checksum == digest
    assert instr.chmod == "644"
    assert instr.sources == ("https://example.com/a.tgz",)
    assert instr.from_stage is None


def test_run_shell_and_exec_forms() -> None:
    kf = parse('FROM a\nRUN  wget http://x/y && echo "$A" \nRUN ["/bin/sh", "-c", "echo \\"hi\\""]')
    shell, exec_ = kf.stages[0].instructions
    assert shell == Run(shell.pos, shell.original, 'wget http://x/y && echo "$A"', None, ())
    assert isinstance(exec_, Run)
    assert exec_.command is None
    assert exec_.argv == ("/bin/sh", "-c", 'echo "hi"')


def test_run_not_json_is_shell_form() -> None:
    instr = one("RUN [ -f /etc/os-release ] && echo ok")
    assert isinstance(instr, Run)
    assert instr.command == "[ -f /etc/os-release ] && echo ok"
    assert instr.argv is None
    instr = one("RUN ['single', 'quotes']")
    assert isinstance(instr, Run) and instr.argv is None


def test_run_heredocs() -> None:
    kf = parse(
        "FROM a\n"
        "RUN <<EOF\n"
        "set -e\n"
        "echo $HOME\n"
        "EOF\n"
        "RUN <<-'END' python3 - <<\"PY\"\n"
        "\t\techo tabs stripped\n"
        "\tEND\n"
        "print(1)\n"
        "PY\n"
        "RUN cat <<EOF > /etc/x.conf\n"
        "a=1\n"
        "EOF\n"
        "COPY a b\n"
    )
    one_, two, three, copy = kf.stages[0].instructions
    assert isinstance(one_, Run) and isinstance(two, Run) and isinstance(three, Run)
    assert one_.command == "<<EOF"
    assert one_.heredocs == (("EOF", "set -e\necho $HOME\n"),)
    assert one_.pos.line == 2 and one_.pos.end_line == 5
    assert two.heredocs == (("END", "echo tabs stripped\n"), ("PY", "print(1)\n"))
    assert three.command == "cat <<EOF > /etc/x.conf"
    assert three.heredocs == (("EOF", "a=1\n"),)
    assert isinstance(copy, Copy) and copy.pos.line == 14


def test_heredoc_inside_quotes_is_not_one() -> None:
    instr = one("RUN echo '<<EOF' \"<<X\" $((1<<2))")
    assert isinstance(instr, Run)
    assert instr.heredocs == ()


def test_cmd_forms() -> None:
    kf = parse('FROM a\nCMD kubectl apply -f manifests/\nCMD ["kubectl", "get", "pods"]\n')
    shell, exec_ = kf.stages[0].instructions
    assert shell == Cmd(shell.pos, shell.original, "kubectl apply -f manifests/", None)
    assert exec_ == Cmd(exec_.pos, exec_.original, None, ("kubectl", "get", "pods"))


def test_cmds_and_launch_and_apps() -> None:
    kf = parse(
        "FROM a\n"
        "APP dashboard local://dashboard.yaml https://example.com/extra.yaml plain/dir\n"
        "CNI calico manifests/calico.yaml\n"
        "CSI openebs charts/openebs\n"
        'APPCMDS dashboard ["kubectl apply -f dashboard.yaml", "kubectl get pods"]\n'
        "APPENV calico POD_CIDR=100.64.0.0/10 MTU=1440\n"
        'LAUNCH ["calico", "dashboard"]\n'
    )
    app, cni, csi, appcmds, appenv, launch = kf.stages[0].instructions
    assert type(app) is App and app.name == "dashboard"
    assert app.sources == (
        "local://dashboard.yaml",
        "https://example.com/extra.yaml",
        "plain/dir",
    )
    assert type(cni) is Cni and cni.name == "calico" and cni.sources == ("manifests/calico.yaml",)
    assert type(csi) is Csi and csi.name == "openebs"
    assert appcmds == AppCmds(
        appcmds.pos,
        appcmds.original,
        "dashboard",
        ("kubectl apply -f dashboard.yaml", "kubectl get pods"),
    )
    assert appenv == AppEnv(
        appenv.pos, appenv.original, "calico", (("POD_CIDR", "100.64.0.0/10"), ("MTU", "1440"))
    )
    assert launch == Launch(launch.pos, launch.original, ("calico", "dashboard"))


def test_cmds() -> None:
    instr = one('CMDS ["kubectl apply -f a.yaml", "helm install b charts/b"]')
    assert instr == Cmds(
        instr.pos, instr.original, ("kubectl apply -f a.yaml", "helm install b charts/b")
    )


def test_kubeversion() -> None:
    instr = one("KUBEVERSION >=v1.22.0 <v1.31.0 || ~1.32, 1.2.x")
    assert isinstance(instr, KubeVersion)
    assert instr.constraint == ">=v1.22.0 <v1.31.0 || ~1.32, 1.2.x"


def test_container_image_instructions() -> None:
    kf = parse(
        "FROM scratch\n"
        'ENTRYPOINT ["/kube-apiserver"]\n'
        "ENTRYPOINT /bin/sh -c 'exec x'\n"
        "WORKDIR /var/lib/my app\n"
        "USER 65532:65532\n"
        "EXPOSE 6443 8080/tcp 53/udp 30000-32767/tcp\n"
        'VOLUME ["/var/lib/etcd", "/data"]\n'
        "VOLUME /a /b\n"
        "STOPSIGNAL SIGTERM\n"
        'SHELL ["/bin/bash", "-eo", "pipefail", "-c"]\n'
    )
    ep, ep2, wd, user, expose, vol, vol2, sig, shell = kf.stages[0].instructions
    assert ep == Entrypoint(ep.pos, ep.original, None, ("/kube-apiserver",))
    assert ep2 == Entrypoint(ep2.pos, ep2.original, "/bin/sh -c 'exec x'", None)
    assert wd == Workdir(wd.pos, wd.original, "/var/lib/my app")
    assert user == User(user.pos, user.original, "65532:65532")
    assert expose == Expose(
        expose.pos, expose.original, ("6443", "8080/tcp", "53/udp", "30000-32767/tcp")
    )
    assert vol == Volume(vol.pos, vol.original, ("/var/lib/etcd", "/data"))
    assert vol2 == Volume(vol2.pos, vol2.original, ("/a", "/b"))
    assert sig == StopSignal(sig.pos, sig.original, "SIGTERM")
    assert shell == Shell(shell.pos, shell.original, ("/bin/bash", "-eo", "pipefail", "-c"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EXPOSE http", "invalid port 'http'"),
        ("STOPSIGNAL sigterm!", "invalid signal 'sigterm!'"),
        ("SHELL /bin/sh", "unexpected '/bin/sh': expected a JSON array"),
        ("SHELL []", "SHELL needs at least one argument"),
        ("COPY --chmod=999 a b", "--chmod=999 is not an octal mode like 0644"),
        ("ADD --checksum=md5:abc a b", "--checksum=md5:abc is not of the form sha256:"),
        ("ADD --from=x a b", "unknown flag --from for ADD"),
        ("COPY --chmod=644 --chmod=755 a b", "the flag --chmod is given twice"),
        ("COPY --from= a b", "the flag --from needs a value"),
        ("RUN --mount=type=cache x", "RUN takes no flags, found --mount"),
        ('COPY ["only-one"]', "COPY needs at least one source and a destination"),
        ("KUBEVERSION >=v1.22 banana", "'banana' is not a version constraint"),
        ("ARG 1X=2", "invalid ARG name '1X'"),
        ("CMDS []", "CMDS needs at least one command"),
        ('CMDS ["  "]', "CMDS has an empty command"),
        ("USER a b", "unexpected 'b': expected the end of the line"),
        ("STOPSIGNAL", "expected a signal name or number, like SIGTERM after STOPSIGNAL"),
    ],
)
def test_argument_errors(text: str, message: str) -> None:
    err = error("FROM a\n" + text)
    assert message in err.message
    assert err.line == 2


def test_original_joins_continuations() -> None:
    kf = parse("FROM a\nRUN apt-get update && \\\n    apt-get install -y curl\n")
    run = kf.stages[0].instructions[0]
    assert run.original == "RUN apt-get update &&     apt-get install -y curl"
    assert isinstance(run, Run) and run.command == "apt-get update &&     apt-get install -y curl"
