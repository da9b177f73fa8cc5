"""Real-world Kubefiles parse into what a builder needs."""

from __future__ import annotations

from pathlib import Path

from kbuild.kubefile import (
    Add,
    App,
    AppCmds,
    AppEnv,
    Cmd,
    Cmds,
    Cni,
    Copy,
    Entrypoint,
    Env,
    Kubefile,
    KubeVersion,
    Label,
    Launch,
    Run,
    expand_instruction,
    parse,
)

DATA = Path(__file__).parent / "data"


def load(name: str) -> Kubefile:
    return parse((DATA / name).read_text(), filename=f"data/{name}")


def test_dashboard() -> None:
    kf = load("dashboard.Kubefile")
    assert kf.global_args == []
    (stage,) = kf.stages
    assert stage.base.image == "kubernetes:v1.30.2"
    copy, cmd = stage.instructions
    assert isinstance(copy, Copy) and copy.sources == ("recommended.yaml",)
    assert copy.dest == "manifests/"
    assert isinstance(cmd, Cmd)
    assert cmd.command == "kubectl apply -f manifests/recommended.yaml"
    assert cmd.pos.filename == "data/dashboard.Kubefile" and cmd.pos.line == 6


def test_app_image() -> None:
    kf = load("app.Kubefile")
    assert [(a.name, a.default) for a in kf.global_args] == [("KUBE", "v1.30.2")]
    (stage,) = kf.stages
    kinds = [type(i) for i in stage.instructions]
    assert kinds == [Label, KubeVersion, Env, Cni, App, App, AppEnv, AppCmds, AppCmds, Launch]
    label, kv, _env, cni, _nginx, tools, appenv, appcmds, _, launch = stage.instructions
    assert isinstance(label, Label)
    assert label.pairs == (
        ("org.opencontainers.image.title", "nginx + calico"),
        ("org.opencontainers.image.vendor", "example"),
    )
    assert isinstance(kv, KubeVersion) and kv.constraint == ">=v1.22.0 <v1.31.0"
    assert isinstance(cni, Cni) and cni.name == "calico"
    assert isinstance(tools, App) and len(tools.sources) == 2
    assert isinstance(appenv, AppEnv)
    expanded = expand_instruction(appenv, {"Registry": "sea.hub:5000"})
    assert isinstance(expanded, AppEnv)
    assert expanded.pairs == (("REPLICAS", "2"), ("IMAGE", "sea.hub:5000/library/nginx:1.25"))
    assert isinstance(appcmds, AppCmds)
    assert appcmds.commands == ("helm install nginx . --set replicaCount=$REPLICAS",)
    assert isinstance(launch, Launch) and launch.apps == ("calico", "nginx", "tools")
    assert launch.pos.line == 15


def test_multistage() -> None:
    kf = load("multistage.Kubefile")
    assert [a.name for a in kf.global_args] == ["ARCH", "VERSION"]
    assert [s.name for s in kf.stages] == ["binaries", "images", "2"]
    binaries, images, final = kf.stages
    assert binaries.base.platform == "linux/${ARCH}"
    add, run = images.instructions
    assert isinstance(add, Add) and add.checksum is not None and add.pos.end_line == 14
    assert isinstance(run, Run) and run.heredocs[0][1].startswith("set -eu\n")
    c1, c2, c3, run2, cmds = final.instructions
    assert isinstance(c1, Copy) and c1.from_stage == "binaries"
    assert isinstance(c2, Copy) and c2.from_stage == "1"
    assert isinstance(c3, Copy) and c3.sources == (
        "etc/kubeadm.yml.tmpl",
        "etc/containerd config.toml",
    )
    assert isinstance(run2, Run) and run2.argv == ("/bin/sh", "-c", "chmod +x bin/*")
    assert isinstance(cmds, Cmds) and len(cmds.commands) == 2


def test_container_image() -> None:
    kf = load("container.Kubefile")
    (stage,) = kf.stages
    ep = stage.instructions[-2]
    assert isinstance(ep, Entrypoint) and ep.argv == ("/usr/local/bin/kube-apiserver",)
    cmd = stage.instructions[-1]
    assert isinstance(cmd, Cmd) and cmd.argv == ("--help",)
