"""Unit tests of the life-cycle pieces that need no host: templates, Config merge,
unit names, image metadata, phase order, preflight verdicts, the runtime's own
on-host scripts run locally."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from kbuild.errors import ClusterError
from kbuild.layerstore import AppInfo, ImageMeta, Store, TarEntry, oci_arch, pack_layer
from kbuild.runtime import render
from kbuild.runtime.contract import exports
from kbuild.runtime.image import inspect_image
from kbuild.runtime.layers import LayerScan, final_templates
from kbuild.runtime.mount import ClusterPaths, escape_path, mounts_escape, unit_text
from kbuild.runtime.preflight import SPACE_MARGIN, parse_facts, problems
from kbuild.runtime.remote import script_argv


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("a={{ .A }}", {"A": "1"}, "a=1"),
        ("a={{.A}}", {"A": "x y"}, "a=x y"),
        ('p={{ .P | default "8080" }}', {}, "p=8080"),
        ('p={{ .P | default "8080" }}', {"P": "9"}, "p=9"),
        ('p={{ default "x" .P }}', {}, "p=x"),
        ("{{ .A }}{{ .B }}", {"A": "1", "B": "2"}, "12"),
        ("no actions $HOME ${X}", {}, "no actions $HOME ${X}"),
        ("{{- .A -}}", {"A": "t"}, "t"),
    ],
)
def test_templates(text: str, env: dict[str, str], expected: str) -> None:
    assert render.render_template(text, env, name="t.tmpl") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{{ .Missing }}", "etc/x.tmpl: template variable 'Missing' is not set"),
        ("line1\n{{ range .X }}", "etc/x.tmpl:2: unsupported template action"),
    ],
)
def test_template_errors(text: str, fragment: str) -> None:
    with pytest.raises(ClusterError) as info:
        render.render_template(text, {}, name="etc/x.tmpl")
    assert fragment in str(info.value)


def test_config_merge_and_overwrite() -> None:
    base = "replicas: 1\nimage: {repo: a, tag: '1'}\nlist: [1, 2]\n---\nkind: B\n"
    merged = render.merge_documents(base, "image: {tag: '2'}\nlist: [3]\n", name="c")
    docs = merged.split("---\n")
    assert "replicas: 1" in docs[0] and "repo: a" in docs[0] and "tag: '2'" in docs[0]
    assert "- 3" in docs[0] and "- 1" not in docs[0]
    assert "kind: B" in docs[1]
    # merging twice gives the same file (re-runs change nothing)
    assert render.merge_documents(merged, "image: {tag: '2'}\nlist: [3]\n", name="c") == merged


def test_final_templates_follow_whiteouts_and_later_layers() -> None:
    scans = [
        LayerScan(size=1, templates={"etc/a.tmpl": "1", "etc/b.tmpl": "b", "m/x/c.tmpl": "c"}),
        LayerScan(size=1, templates={"etc/a.tmpl": "2"}, deleted=["etc/b.tmpl"], opaque=["m/x"]),
    ]
    assert final_templates(scans) == {"etc/a.tmpl": "2"}
    assert render.render_files({"etc/a.conf.tmpl": "v={{ .V }}"}, {"V": "3"}) == {
        "etc/a.conf": b"v=3"
    }


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/kbuild/data/c1/rootfs",
        "/tmp/kbuild-e2e/my-cluster/rootfs",
        "/a b/ü/.x/rootfs",
        "/",
    ],
)
def test_unit_names_match_systemd_escape(path: str) -> None:
    tool = shutil.which("systemd-escape")
    if tool is None:
        pytest.skip("systemd-escape is not installed")
    want = subprocess.run(
        [tool, "--path", path], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert escape_path(path) == want


def test_unit_lists_layers_top_first() -> None:
    from kbuild.runtime.image import Layer

    layers = [Layer(f"sha256:{c * 64}", f"sha256:{c * 64}", "t", 1) for c in "ab"]
    text = unit_text(ClusterPaths("/d", "c"), layers)
    assert (
        "Options=lowerdir=/d/c/lower/1:/d/c/lower/0,upperdir=/d/c/upper,workdir=/d/c/work" in text
    )
    assert "Where=/d/c/rootfs" in text and "WantedBy=local-fs.target" in text


def _meta_image(store: Store, meta: ImageMeta) -> str:
    layer = pack_layer(store, [TarEntry("x", "file", data=b"x", size=1)])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["A=1", "B=x=y"], "Labels": meta.labels()},
    }
    store.tag("meta:1", store.write_image(config, [layer]))
    return "meta:1"


def test_image_metadata_written_by_the_builder_is_read_by_the_runtime(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    apps = {
        "web": AppInfo(name="web", type="kube", files=["a.yaml", "b.yaml"]),
        "tool": AppInfo(name="tool", type="shell", files=["run.sh"], cmds=["sh run.sh --x"],
                        app_cmds=True, env={"K": "v"}),
    }  # fmt: skip
    ref = _meta_image(store, ImageMeta(apps=apps, launch=["web", "tool"]))
    image = inspect_image(store, ref)
    assert image.env == {"A": "1", "B": "x=y"}
    assert image.launch_commands([], []) == [
        ("application/apps/web", "kubectl apply -f a.yaml", {}),
        ("application/apps/web", "kubectl apply -f b.yaml", {}),
        ("application/apps/tool", "sh run.sh --x", {"K": "v"}),
    ]
    # Clusterfile appNames pick apps, Clusterfile cmds win over everything
    assert [c for _, c, _ in image.launch_commands(["tool"], [])] == ["sh run.sh --x"]
    assert image.launch_commands(["tool"], ["echo hi"]) == [(".", "echo hi", {})]
    with pytest.raises(ClusterError, match="no app 'nope'"):
        image.launch_commands(["nope"], [])

    store2 = Store(tmp_path / "s2")
    ref2 = _meta_image(store2, ImageMeta(cmds=["echo a", "echo b"]))
    assert [c for _, c, _ in inspect_image(store2, ref2).launch_commands([], [])] == [
        "echo a",
        "echo b",
    ]


def test_preflight_verdicts() -> None:
    facts = parse_facts(
        "h1",
        "arch=aarch64\nuid=1000\nsystemd=no\ntools=sh tar\nmissing=sha256sum systemctl\n"
        "free_kb=1000\nfstype=overlayfs\ndata_root_exists=no\noverlay=yes\n",
    )
    found = problems(facts, image_arch="amd64", need_bytes=10_000_000, data_root="/d")
    text = "\n".join(found)
    for fragment in ("uid 1000", "systemd is not running", "missing commands: sha256sum, systemctl",
                     "architecture arm64 does not match the image's amd64", "overlayfs",
                     "not enough disk space"):  # fmt: skip
        assert fragment in text
    ok = parse_facts("h2", "arch=x86_64\nuid=0\nsystemd=yes\ntools=sh\nmissing=\nfree_kb=99999999\n"
                     "fstype=ext2/ext3\noverlay=yes\n")  # fmt: skip
    assert problems(ok, image_arch="amd64", need_bytes=1, data_root="/d") == []
    # a relay's tree root keeps the compressed blobs it passes on until the run ends
    free = ok.free_bytes - SPACE_MARGIN
    assert problems(ok, image_arch="amd64", need_bytes=free // 2, data_root="/d",
                    relay_bytes=free // 2) == []  # fmt: skip
    (tight,) = problems(ok, image_arch="amd64", need_bytes=free // 2, data_root="/d",
                        relay_bytes=free // 2 + 1_000_000)  # fmt: skip
    assert "a relay's copy of their blobs 51167.4 MB" in tight, tight
    assert oci_arch("x86_64") == "amd64" and oci_arch("aarch64") == "arm64"


def test_exports_from_join_cluster_output() -> None:
    out = (
        "noise\nkbuild-export: TOKEN=abc.def\nkbuild-export: bad name=x\n"
        "kbuild-export: HASH=sha256:1=2\n"
    )
    assert exports(out) == {"TOKEN": "abc.def", "HASH": "sha256:1=2"}


def test_remove_cluster_script_keeps_what_it_did_not_create(tmp_path: Path) -> None:
    """remove-cluster.sh on this machine: only kbuild's own dirs go."""
    existing = tmp_path / "var"
    existing.mkdir()
    (existing / "other").write_text("keep")
    data_root = existing / "lib" / "kbuild" / "data"
    subprocess.run(script_argv("prepare-data-root.sh", str(data_root)), check=True)
    assert (data_root / ".kbuild-created").read_text().strip() == str(existing / "lib")
    for cluster, layer in (("c1", "aa"), ("c2", "bb")):
        (data_root / cluster / "lower").mkdir(parents=True)
        (data_root / "layers" / layer / "fs").mkdir(parents=True)
        (data_root / cluster / "lower" / "0").symlink_to(data_root / "layers" / layer / "fs")

    def remove(cluster: str) -> list[str]:
        rootfs = mounts_escape(str(data_root / cluster / "rootfs"))
        return script_argv("remove-cluster.sh", str(data_root), cluster, rootfs)

    subprocess.run(remove("c1"), check=True)
    assert not (data_root / "c1").exists() and (data_root / "c2").exists()
    assert sorted(p.name for p in (data_root / "layers").iterdir()) == [".lock", "bb"]
    subprocess.run(remove("c2"), check=True)
    assert not (existing / "lib").exists()
    assert (existing / "other").read_text() == "keep"


def test_receive_script_locally_verifies_and_renames(tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("f")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    data = buf.getvalue()
    hexname = hashlib.sha256(data).hexdigest()
    store = tmp_path / "layers"
    ok = subprocess.run(
        script_argv("receive-layer.sh", str(store), hexname, "none"),
        input=data,
        capture_output=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert (store / hexname / "fs" / "f").read_bytes() == b"hi"
    again = subprocess.run(
        script_argv("receive-layer.sh", str(store), hexname, "none"),
        input=data,
        capture_output=True,
    )
    assert b"present" in again.stdout
    bad = subprocess.run(
        script_argv("receive-layer.sh", str(store), "0" * 64, "none"),
        input=data,
        capture_output=True,
    )
    assert bad.returncode == 4
    assert sorted(p.name for p in store.iterdir()) == [".lock", hexname]


def test_image_plugins_are_read_from_plugins_dir() -> None:
    from kbuild.runtime.clusterfile import load_plugins
    from kbuild.runtime.layers import final_plugins

    scans = [
        LayerScan(size=1, plugins={"plugins/a.yaml": "x", "plugins/b.yaml": "y"}),
        LayerScan(size=1, deleted=["plugins/b.yaml"]),
    ]
    assert final_plugins(scans) == {"plugins/a.yaml": "x"}
    text = "kind: Plugin\nmetadata: {name: p}\nspec: {action: post-install, data: 'echo'}\n"
    assert [p.name for p in load_plugins(text, source="img:plugins/a.yaml")] == ["p"]
    with pytest.raises(Exception, match=r"img:plugins/a.yaml: document 1: expected kind Plugin"):
        load_plugins("kind: Config\n", source="img:plugins/a.yaml")
