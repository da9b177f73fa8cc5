"""``kbuild build``, ``kbuild inspect`` and ``kbuild history`` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbuild.cli.main import main
from tests.fixtures.registry import RegistryServer


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "manifests").mkdir(parents=True)
    (ctx / "manifests" / "dashboard.yaml").write_text("kind: Deployment\n")
    (ctx / "Kubefile").write_text(
        "FROM scratch\nLABEL team=ops\nCOPY manifests /manifests\n"
        "APP dash local://manifests/dashboard.yaml\nLAUNCH [\"dash\"]\n")
    return ctx


def test_build_inspect_history(project: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "root")
    code, out, err = _run(["--root", root, "build", "-t", "dash:v1", "-t", "dash:latest",
                           "--label", "release=1", "--progress", "plain", str(project)], capsys)
    assert code == 0, err
    assert "[3/5] COPY manifests /manifests" in err
    assert "[3/5] DONE" in err
    assert "Built dash:v1, dash:latest" in out
    assert "image  sha256:" in out and "in 2 layers" in out

    code, out, err = _run(["--root", root, "build", "-t", "dash:v1", "--label", "release=1",
                           "--progress", "plain", str(project)], capsys)
    assert code == 0 and "[3/5] CACHED" in err and "[4/5] CACHED" in err

    code, out, err = _run(["--root", root, "inspect", "dash:v1", "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["labels"]["team"] == "ops" and data["labels"]["release"] == "1"
    assert data["cluster"]["launch"] == ["dash"]
    assert [a["name"] for a in data["cluster"]["apps"]] == ["dash"]
    layers = data["layers"]
    assert [x["createdBy"] for x in layers] == ["COPY manifests /manifests",
                                                "APP dash local://manifests/dashboard.yaml"]
    for layer in layers:
        assert layer["digest"].startswith("sha256:") and layer["diffID"].startswith("sha256:")
        assert layer["mediaType"].endswith("tar+zstd")
        assert layer["uncompressedSize"] > layer["size"] > 0

    code, out, _ = _run(["--root", root, "inspect", "dash:v1"], capsys)
    assert code == 0 and "app dash (app, kube)" in out and "COPY manifests /manifests" in out

    code, out, _ = _run(["--root", root, "history", "dash:latest"], capsys)
    assert code == 0
    lines = [ln for ln in out.splitlines() if "LAUNCH" in ln or "LABEL" in ln]
    assert "LAUNCH" in lines[0] and "LABEL" in lines[-1]  # newest first


def test_gzip_and_no_cache(project: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "root")
    code, _, err = _run(["--root", root, "build", "-t", "g:1", "--compression", "gzip",
                         "--level", "6", "--progress", "plain", str(project)], capsys)
    assert code == 0, err
    code, out, _ = _run(["--root", root, "inspect", "g:1", "--format", "json"], capsys)
    assert all(x["mediaType"].endswith("tar+gzip") for x in json.loads(out)["layers"])
    code, _, err = _run(["--root", root, "build", "-t", "g:1", "--compression", "gzip",
                         "--no-cache", "--progress", "plain", str(project)], capsys)
    assert code == 0 and "CACHED" not in err


def test_kubefile_error_exit_2(project: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    (project / "Kubefile").write_text("FROM scratch\nCOPPY a b\n")
    code, _, err = _run(["--root", str(tmp_path / "r"), "build", "-t", "x:1", str(project)],
                        capsys)
    assert code == 2
    assert "Kubefile:2" in err and "Traceback" not in err


def test_build_error_exit_1_without_traceback(project: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (project / "Kubefile").write_text("FROM scratch\nCOPY missing /x\n")
    code, _, err = _run(["--root", str(tmp_path / "r"), "build", str(project)], capsys)
    assert code == 1
    assert "'missing' not found in the build context" in err and "Traceback" not in err


def test_bad_build_arg_and_tag(project: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    root = str(tmp_path / "r")
    code, _, err = _run(["--root", root, "build", "--label", "novalue", str(project)], capsys)
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = _run(["--root", root, "build", "-t", "UPPER/Case:!", str(project)], capsys)
    assert code == 2


def test_inspect_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["--root", str(tmp_path / "r"), "inspect", "nope:1"], capsys)
    assert code == 1 and "nope:1" in err


@pytest.mark.integration
def test_from_registry_image_is_pulled(open_registry: RegistryServer,
                                       project: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    from kbuild.layerstore import Store
    from kbuild.registry import push_image

    src_root = tmp_path / "src"
    code, _, err = _run(["--root", str(src_root), "build", "-t", "base:1", "--progress", "plain",
                         str(project)], capsys)
    assert code == 0, err
    ref = f"{open_registry.host}/team/base:1"
    push_image(Store(src_root), "base:1", ref)
    (project / "extra.txt").write_text("extra\n")
    (project / "Kubefile").write_text(f"FROM {ref}\nCOPY extra.txt /etc/extra.txt\n")
    root = tmp_path / "fresh"
    code, _, err = _run(["--root", str(root), "build", "-t", "child:1", "--progress", "plain",
                         str(project)], capsys)
    assert code == 0, err
    data = json.loads(_run(["--root", str(root), "inspect", "child:1", "--format", "json"],
                           capsys)[1])
    base = json.loads(_run(["--root", str(src_root), "inspect", "base:1", "--format", "json"],
                           capsys)[1])
    assert [x["digest"] for x in data["layers"][:2]] == [x["digest"] for x in base["layers"]]
    assert len(data["layers"]) == 3
    assert [a["name"] for a in data["cluster"]["apps"]] == ["dash"]  # inherited
    assert data["cluster"]["launch"] is None  # not inherited


def test_collected_images_build_and_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            open_registry: RegistryServer) -> None:
    from kbuild.layerstore import Store
    from kbuild.registry import push_image
    from tests.registry.images import make_image

    root = str(tmp_path / "root")
    api = f"{open_registry.host}/team/api:1"
    other = Store(tmp_path / "elsewhere")
    make_image(other, "api:1", [{"bin/api": b"api"}])
    pushed = push_image(other, "api:1", api)
    ctx = tmp_path / "app"
    (ctx / "web").mkdir(parents=True)
    (ctx / "web" / "web.yaml").write_text(
        f"kind: Pod\nmetadata: {{name: api}}\nspec:\n  containers:\n  - name: api\n"
        f"    image: {api}\n  - name: gone\n    image: {open_registry.host}/team/gone:1\n")
    (ctx / "Kubefile").write_text("FROM scratch\nAPP web local://web\n")
    argv = ["--root", root, "build", "-t", "web:1", "--progress", "plain", str(ctx)]
    code, out, err = _run(argv, capsys)
    assert code == 2, err
    assert f"{open_registry.host}/team/gone:1, wanted by application/apps/web/web.yaml:8" in err
    assert "Traceback" not in err and "Built" not in out

    ignored = tmp_path / "ignored"
    ignored.write_text(f"{open_registry.host}/team/gone:*\n")
    code, out, err = _run([*argv, "--ignored-image-list", str(ignored)], capsys)
    assert code == 0, err
    assert "[images] collect container images" in err and f"| {api} sha256:" in err

    code, out, _ = _run(["--root", root, "inspect", "web:1"], capsys)
    assert code == 0
    assert f"  {api}  {pushed.digest}  " in out and "(served as team/api:1)" in out
    assert "from application/apps/web/web.yaml:6 (app web, Pod/api container api)" in out
    code, out, _ = _run(["--root", root, "inspect", "web:1", "--format", "json"], capsys)
    images = json.loads(out)["cluster"]["images"]
    assert [(i["name"], i["digest"], i["repository"], i["tag"]) for i in images] == [
        (api, pushed.digest, "team/api", "1")]
    assert images[0]["size"] > 0 and images[0]["sources"][0]["line"] == 6
