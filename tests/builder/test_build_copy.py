"""COPY builds: cache keys, ignore files, symlinks, metadata-only instructions, determinism."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kbuild.errors import BuildError
from kbuild.layerstore import Store

from .util import run_build, write_tree

KUBEFILE = """FROM scratch
COPY manifests /manifests
COPY bin/tool /bin/tool
"""


def test_rebuild_hits_cache_and_gives_same_image(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"manifests/a.yaml": "a: 1\n", "bin/tool": b"\x7fELF" + b"x" * 100})
    first = run_build(store, ctx, KUBEFILE, tags=["t:1"])
    assert first.cached == [False, False]
    second = run_build(store, ctx, tags=["t:1"])
    assert second.cached == [True, True]
    assert second.result.manifest.digest == first.result.manifest.digest
    assert store.resolve("t:1").digest == first.result.manifest.digest


def test_changed_byte_misses_but_touched_file_hits(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"manifests/a.yaml": "a: 1\n", "bin/tool": "v1"})
    run_build(store, ctx, KUBEFILE)
    later = os.stat(ctx / "bin/tool").st_mtime + 100
    os.utime(ctx / "bin/tool", (later, later))
    os.utime(ctx / "manifests/a.yaml", (later, later))
    assert run_build(store, ctx).cached == [True, True]
    (ctx / "bin/tool").write_text("v2")  # same size, one byte differs
    assert run_build(store, ctx).cached == [True, False]
    (ctx / "bin/tool").chmod(0o600)  # mode is part of the key
    assert run_build(store, ctx).cached == [True, False]
    (ctx / "manifests/a.yaml").write_text("a: 2\n")  # a parent's miss invalidates children
    assert run_build(store, ctx).cached == [False, False]


def test_no_cache_rebuilds(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"manifests/a.yaml": "", "bin/tool": ""})
    run_build(store, ctx, KUBEFILE)
    assert run_build(store, ctx, no_cache=True).cached == [False, False]


def test_build_arg_in_destination_changes_key(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"f": "x"})
    kf = "FROM scratch\nARG DIR=one\nCOPY f /${DIR}/f\n"
    a = run_build(store, ctx, kf)
    b = run_build(store, ctx, build_args={"DIR": "two"})
    assert b.cached == [False]
    assert "two/f" in b.layer_members(0)
    assert "one/f" in a.layer_members(0)


def test_ignore_file_keeps_files_out(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"app/keep.yaml": "k", "app/secret.key": "s", "app/tmp/x": "t",
                     "app/tmp/important": "i", ".dockerignore": "**/*.key\napp/tmp\n"
                     "!app/tmp/important\n"})
    built = run_build(store, ctx, "FROM scratch\nCOPY app /app\n")
    names = set(built.layer_members(0))
    assert {"app/keep.yaml", "app/tmp/important"} <= names
    assert "app/secret.key" not in names and "app/tmp/x" not in names
    # changing an ignored file does not touch the cache
    (ctx / "app/secret.key").write_text("other")
    assert run_build(store, ctx).cached == [True]


def test_symlinks_copied_as_links(store: Store, tmp_path: Path, ctx: Path) -> None:
    write_tree(tmp_path, {"outside/secret": "s"})
    write_tree(ctx, {"d/real": "r"})
    os.symlink("real", ctx / "d" / "rel")
    os.symlink(tmp_path / "outside" / "secret", ctx / "d" / "abs")
    members = run_build(store, ctx, "FROM scratch\nCOPY d /d\n").layer_members(0)
    assert members["d/rel"].issym() and members["d/rel"].linkname == "real"
    assert members["d/abs"].issym() and members["d/abs"].linkname == str(
        tmp_path / "outside" / "secret")
    assert "d/abs/secret" not in members


def test_refuses_sources_outside_context(store: Store, tmp_path: Path, ctx: Path) -> None:
    (tmp_path / "x").write_text("secret")
    with pytest.raises(BuildError, match=r"Kubefile:2: source '\.\./x' is outside"):
        run_build(store, ctx, "FROM scratch\nCOPY ../x /x\n")
    assert list(store.records("build")) == []


def test_metadata_instructions_add_no_layers(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"f": "x"})
    built = run_build(store, ctx, """FROM scratch
LABEL a=b c="d e"
ENV P=/opt K=v
ARG X=1
MAINTAINER me
KUBEVERSION >=1.28
WORKDIR /work
USER 1000
EXPOSE 80 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/app"]
CMD ["--serve"]
COPY f rel/f
""")
    assert len(built.layers) == 1
    cfg = built.config["config"]
    assert cfg["Labels"]["a"] == "b" and cfg["Labels"]["c"] == "d e"
    assert cfg["Env"] == ["P=/opt", "K=v"]
    assert cfg["WorkingDir"] == "/work" and cfg["User"] == "1000"
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}} and cfg["StopSignal"] == "SIGTERM"
    assert cfg["Entrypoint"] == ["/bin/app"] and cfg["Cmd"] == ["--serve"]
    assert built.config["author"] == "me"
    assert cfg["Labels"]["io.kbuild.kubeversion"] == ">=1.28"
    assert "work/rel/f" in built.layer_members(0)  # relative dest under WORKDIR
    history = built.config["history"]
    assert [h["created_by"] for h in history if not h.get("empty_layer")] == ["COPY f rel/f"]
    assert len(history) == 13  # every instruction after FROM
    assert len(built.config["rootfs"]["diff_ids"]) == 1


def test_copy_semantics_globs_chmod_arch(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"a.yaml": "a", "b.yaml": "b", "bin/amd64/tool": "t", "bin/arm64/tool": "u",
                     "dir/x": "x"})
    built = run_build(store, ctx, """FROM scratch
COPY *.yaml /m/
COPY --chmod=0750 bin/${ARCH}/tool /usr/bin/tool
COPY dir /dst
COPY dir a.yaml /both/
""", platform="linux/arm64")
    assert {"m/a.yaml", "m/b.yaml"} <= set(built.layer_members(0))
    tool = built.layer_members(1)["usr/bin/tool"]
    assert stat.S_IMODE(tool.mode) == 0o750
    assert built.layer_tar(1).extractfile(tool).read() == b"u"  # type: ignore[union-attr]
    assert "dst/x" in built.layer_members(2)
    assert {"both/x", "both/a.yaml"} <= set(built.layer_members(3))
    assert built.config["architecture"] == "arm64"


def test_several_sources_need_a_directory(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"a": "", "b": ""})
    with pytest.raises(BuildError, match="must be a directory ending in /"):
        run_build(store, ctx, "FROM scratch\nCOPY a b /dest\n")


def test_missing_source_names_line(store: Store, ctx: Path) -> None:
    with pytest.raises(BuildError, match=r"Kubefile:3: 'nope' not found"):
        run_build(store, ctx, "FROM scratch\nLABEL a=b\nCOPY nope /x\n")


def test_deterministic_with_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for n in range(2):
        ctx = tmp_path / f"ctx{n}"
        write_tree(ctx, {"d/a": "a", "d/b/c": "c"})
        os.utime(ctx / "d/a", (1800000000 + n * 5000, 1800000000 + n * 5000))
        store = Store(tmp_path / f"root{n}")
        digests.append(run_build(store, ctx, KUBEFILE.replace("manifests", "d").replace(
            "COPY bin/tool /bin/tool\n", "")).result.manifest.digest)
    assert digests[0] == digests[1]


def test_metadata_change_keeps_later_copy_cached(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"f": "x"})
    run_build(store, ctx, "FROM scratch\nCOPY f /a\nCOPY f /b\n")
    again = run_build(store, ctx, "FROM scratch\nCOPY f /a\nLABEL new=1\nENV X=1\nCOPY f /b\n")
    assert again.cached == [True, True]


def test_tree_signature_reuse_still_sees_content_changes(
        store: Store, ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kbuild.builder import copy as copymod

    monkeypatch.setattr(copymod, "RACY_NS", 0)  # trust stat data of files just written
    write_tree(ctx, {"d/a": "aaaa", "d/b": "bbbb"})
    run_build(store, ctx, "FROM scratch\nCOPY d /d\n")
    assert any(k.startswith("stat-tree:") for _, k, _ in store.records("build"))
    assert run_build(store, ctx).cached == [True]
    st = os.stat(ctx / "d/a")
    (ctx / "d/a").write_text("AAAA")  # same size; put the old mtime back: ctime still moves
    os.utime(ctx / "d/a", ns=(st.st_atime_ns, st.st_mtime_ns))
    built = run_build(store, ctx)
    assert built.cached == [False]
    assert built.layer_tar(0).extractfile("d/a").read() == b"AAAA"  # type: ignore[union-attr]


def test_several_platforms_make_an_index(store: Store, ctx: Path) -> None:
    from kbuild.builder import BuildOptions, build
    from kbuild.layerstore import MediaType

    write_tree(ctx, {"bin/amd64/tool": "x86", "bin/arm64/tool": "arm"})
    (ctx / "Kubefile").write_text("FROM scratch\nCOPY bin/${ARCH}/tool /tool\n")
    result = build(store, BuildOptions(context=ctx, tags=["multi:1"],
                                       platform="linux/amd64,linux/arm64"))
    desc = store.resolve("multi:1")
    assert desc.media_type == MediaType.OCI_INDEX and desc.digest == result.manifest.digest
    index = store.read_json(desc.digest)
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ["amd64", "arm64"]
    for m in index["manifests"]:
        config = store.read_config(store.read_manifest(m["digest"]))
        assert config["architecture"] == m["platform"]["architecture"]
    # FROM the index picks the manifest of the build's platform
    (ctx / "Kubefile").write_text("FROM multi:1\nLABEL x=y\n")
    child = run_build(store, ctx, platform="linux/arm64")
    arm = store.read_manifest(index["manifests"][1]["digest"])
    assert child.layers == arm["layers"]
    assert child.layer_tar(0).extractfile("tool").read() == b"arm"  # type: ignore[union-attr]
