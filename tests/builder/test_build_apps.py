"""APP/CNI/CSI/LAUNCH/CMDS/APPCMDS/APPENV: files under application/apps, metadata in the image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kbuild.errors import BuildError
from kbuild.layerstore import META_KEY, ImageMeta, Store

from .util import Built, run_build, write_tree


def _meta(built: Built) -> ImageMeta:
    labels = built.config["config"]["Labels"]
    doc = json.loads(labels[META_KEY])
    assert built.manifest["annotations"][META_KEY] == labels[META_KEY]
    assert doc["schemaVersion"] == 1
    return ImageMeta.from_dict(doc)


def test_app_types_and_launch(store: Store, ctx: Path, helm_env: Path) -> None:
    write_tree(ctx, {
        "charts/nginx/Chart.yaml": "apiVersion: v2\nname: nginx\nversion: 0.1.0\n",
        "charts/nginx/values.yaml": "",
        "manifests/dashboard.yaml": "kind: Deployment\n", "manifests/rbac.yml": "",
        "scripts/init.sh": "echo hi\n",
        "calico.yaml": "kind: DaemonSet\n",
        "misc/data.bin": "x",
    })
    built = run_build(store, ctx, """FROM scratch
APP nginx local://charts/nginx
APP dash local://manifests/dashboard.yaml manifests/rbac.yml
APP init local://scripts/init.sh
CNI calico local://calico.yaml
APP other misc/data.bin
APPCMDS other ["sh run.sh", "echo done"]
APPENV dash NS=kube-system
LAUNCH ["calico", "nginx", "dash", "init", "other"]
""")
    assert len(built.layers) == 5
    meta = _meta(built)
    apps = meta.apps
    # sealer's layout: the chart directory's contents are the app's directory
    assert apps["nginx"].type == "helm" and apps["nginx"].cmds == ["helm upgrade --install nginx ."]
    assert apps["nginx"].files == ["Chart.yaml", "values.yaml"]
    assert apps["dash"].type == "kube"
    assert apps["dash"].cmds == ["kubectl apply -f dashboard.yaml", "kubectl apply -f rbac.yml"]
    assert apps["dash"].env == {"NS": "kube-system"}
    assert apps["init"].type == "shell" and apps["init"].cmds == ["bash init.sh"]
    assert apps["calico"].kind == "cni" and meta.cni == "calico"
    assert apps["other"].type == "unknown" and apps["other"].cmds == ["sh run.sh", "echo done"]
    assert meta.launch == ["calico", "nginx", "dash", "init", "other"]
    labels = built.config["config"]["Labels"]
    assert labels["io.kbuild.cni"] == "calico"
    assert labels["io.kbuild.launch"] == "calico,nginx,dash,init,other"
    assert "application/apps/nginx/Chart.yaml" in built.layer_members(0)
    assert "application/apps/dash/rbac.yml" in built.layer_members(1)


def test_apps_inherited_launch_not(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"base.yaml": "b", "top.yaml": "t", "new-base.yaml": "n"})
    run_build(store, ctx, "FROM scratch\nAPP base local://base.yaml\nLAUNCH [\"base\"]\n",
              tags=["base:1"])
    child = run_build(store, ctx, "FROM base:1\nAPP top local://top.yaml\nKUBEVERSION >=1.28\n",
                      tags=["child:1"])
    meta = _meta(child)
    assert list(meta.apps) == ["base", "top"]
    assert meta.launch is None
    assert "io.kbuild.launch" not in child.config["config"]["Labels"]
    assert len(child.layers) == 2
    # replacing an inherited app hides the old files with an opaque whiteout
    again = run_build(store, ctx, "FROM child:1\nAPP base local://new-base.yaml\n")
    members = again.layer_members(2)
    assert "application/apps/base/.wh..wh..opq" in members
    assert "application/apps/base/new-base.yaml" in members
    assert _meta(again).apps["base"].files == ["new-base.yaml"]


def test_launch_appcmds_of_inherited_apps(store: Store, ctx: Path) -> None:
    # sealer's FROM app-image + LAUNCH pattern: the names come from the base.
    write_tree(ctx, {"base.yaml": "b"})
    run_build(store, ctx, "FROM scratch\nAPP base local://base.yaml\n", tags=["base:1"])
    child = run_build(
        store, ctx, 'FROM base:1\nAPPCMDS base ["kubectl apply -f base.yaml -n x"]\n'
        'LAUNCH ["base"]\n'
    )
    meta = _meta(child)
    assert meta.launch == ["base"]
    assert meta.apps["base"].cmds == ["kubectl apply -f base.yaml -n x"]
    with pytest.raises(BuildError, match=r"LAUNCH names app 'nope'.*known: base"):
        run_build(store, ctx, 'FROM base:1\nLAUNCH ["nope"]\n')


def test_launch_needs_commands_for_unknown_type(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"blob.bin": ""})
    with pytest.raises(BuildError, match="give its commands with APPCMDS"):
        run_build(store, ctx, "FROM scratch\nAPP a local://blob.bin\nLAUNCH [\"a\"]\n")


def test_cmd_and_cmds_recorded(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"m.yaml": ""})
    built = run_build(store, ctx, "FROM scratch\nCOPY m.yaml /manifests/\n"
                      "CMD kubectl apply -f manifests/m.yaml\n")
    meta = _meta(built)
    assert meta.cmd == ["kubectl apply -f manifests/m.yaml"]
    assert built.config["config"]["Cmd"] == ["/bin/sh", "-c", "kubectl apply -f manifests/m.yaml"]
    built = run_build(store, ctx, "FROM scratch\nCMDS [\"a\", \"b\"]\n")
    assert _meta(built).cmds == ["a", "b"] and built.layers == []


def test_plain_image_has_no_cluster_metadata(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"f": ""})
    built = run_build(store, ctx, "FROM scratch\nCOPY f /f\n")
    assert "Labels" not in built.config["config"]
    assert "annotations" not in built.manifest or META_KEY not in built.manifest["annotations"]


def test_sealer_style_kubefiles(store: Store, ctx: Path, helm_env: Path) -> None:
    """sealer's layout: an APP directory's contents are the app's directory, APPCMDS
    and the default commands are relative to it, so sealer's Kubefiles work as written."""
    from tests.builder.collect.charts import write_chart
    from tests.registry.images import make_image

    for image in ("local/es:8", "local/nginx:1.27"):
        make_image(store, image, [{"bin": image.encode()}])
    pod = ("kind: Pod\nmetadata: {name: es}\n"
           "spec: {containers: [{name: es, image: 'local/es:8'}]}\n")
    write_tree(ctx, {"es/es.yaml": pod, "es/svc.yaml": "kind: Service\nmetadata: {name: s}\n",
                     "yamls/a.yaml": "kind: ConfigMap\n", "yamls/b.yml": "kind: ConfigMap\n"})
    write_chart(ctx / "nginx", "nginx", "local/nginx", "1.27")
    built = run_build(store, ctx, """FROM scratch
APP es local://es
APPCMDS es ["kubectl apply -f es.yaml"]
APP nginx local://nginx
APP cfg local://yamls
LAUNCH ["es", "nginx", "cfg"]
""")
    files = {n for layer in range(3) for n in built.layer_members(layer)}
    assert {"application/apps/es/es.yaml", "application/apps/es/svc.yaml",
            "application/apps/nginx/Chart.yaml", "application/apps/nginx/templates/deployment.yaml",
            "application/apps/cfg/a.yaml", "application/apps/cfg/b.yml"} <= files
    assert not any(n.startswith(("application/apps/es/es/", "application/apps/nginx/nginx/"))
                   for n in files)
    apps = _meta(built).apps
    assert apps["es"].cmds == ["kubectl apply -f es.yaml"] and apps["es"].app_cmds
    assert (apps["nginx"].type, apps["nginx"].cmds) == ("helm", ["helm upgrade --install nginx ."])
    assert apps["cfg"].cmds == ["kubectl apply -f a.yaml", "kubectl apply -f b.yml"]
    assert [(c.name, c.sources[0].app) for c in _meta(built).images] == [
        ("docker.io/local/nginx:1.27", "nginx"), ("docker.io/local/es:8", "es")]
