"""RUN over an overlay of the parent layers; multi-stage builds and parallel stages."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.builder.events import BytesDone
from kbuild.errors import BuildError
from kbuild.layerstore import Store

from .util import run_build, write_tree

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="RUN needs root")


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


@needs_root
def test_run_changes_become_a_layer_with_whiteouts(store: Store, ctx: Path,
                                                   tmp_path: Path) -> None:
    write_tree(ctx, {"etc/keep": "k", "etc/drop": "d", "data/old/x": "x"})
    built = run_build(store, ctx, """FROM scratch
COPY etc /etc
COPY data /data
ENV GREETING=hello
RUN echo "$GREETING" > etc/new && rm etc/drop && rm -r data/old && mkdir data/old \\
    && echo y > data/old/y && test -f "$ROOTFS/etc/keep" && pwd > etc/cwd
""")
    assert len(built.layers) == 3
    members = built.layer_members(2)
    assert "etc/.wh.drop" in members
    assert "data/old/.wh..wh..opq" in members
    assert "etc/keep" not in members  # unchanged lower files are not copied up
    root = built.rootfs(tmp_path / "rootfs")
    assert (root / "etc/new").read_text() == "hello\n"
    assert not (root / "etc/drop").exists()
    assert sorted(os.listdir(root / "data/old")) == ["y"]
    assert (root / "etc/keep").read_text() == "k"
    assert run_build(store, ctx).cached == [True, True, True]
    # nothing left behind: no mounts, no temp dirs
    assert "kbuild-run" not in _mounts()
    assert list((store.root / "tmp").glob("build-*")) == []


@needs_root
def test_run_heredoc_and_exec_form(store: Store, ctx: Path, tmp_path: Path) -> None:
    built = run_build(store, ctx, """FROM scratch
RUN <<EOF
echo one > a
echo two > b
EOF
RUN ["sh", "-c", "cat a b > c"]
WORKDIR /sub
RUN echo here > here
""")
    root = built.rootfs(tmp_path / "r")
    assert (root / "c").read_text() == "one\ntwo\n"
    assert (root / "sub/here").read_text() == "here\n"


@needs_root
def test_failing_run_reports_and_leaves_cache(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"f": "f"})
    run_build(store, ctx, "FROM scratch\nCOPY f /f\n")
    records = sorted(k for _, k, _ in store.records("build"))
    (ctx / "Kubefile").write_text(
        "FROM scratch\nCOPY f /f\nRUN echo first line; echo second line >&2; exit 7\n")
    with pytest.raises(BuildError) as info:
        run_build(store, ctx)
    text = str(info.value)
    assert "Kubefile:3: RUN failed: RUN echo first line" in text
    assert "exit code: 7" in text
    assert "first line" in text and "second line" in text
    assert sorted(k for _, k, _ in store.records("build")) == records
    assert "kbuild-run" not in _mounts()
    assert list((store.root / "tmp").glob("build-*")) == []


def test_run_without_root_says_so(store: Store, ctx: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # We are root in CI; a non-root uid is the one thing a real part cannot give on demand.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BuildError, match="RUN needs root") as info:
        run_build(store, ctx, "FROM scratch\nRUN true\n")
    assert info.value.hint and "root" in info.value.hint


@needs_root
def test_independent_stages_run_in_parallel(store: Store, ctx: Path, tmp_path: Path) -> None:
    run = "RUN echo {} > name && date +%s.%N > start && sleep 2 && date +%s.%N > end"
    kf = f"""FROM scratch AS a
{run.format("a")}
FROM scratch AS b
{run.format("b")}
FROM scratch AS unused
RUN exit 1
FROM scratch
COPY --from=a /start /end /out/a/
COPY --from=b /start /end /out/b/
"""
    built = run_build(store, ctx, kf)
    root = built.rootfs(tmp_path / "r")
    a0, a1, b0, b1 = (float((root / f"out/{s}/{e}").read_text())
                      for s in "ab" for e in ("start", "end"))
    # the two RUNs were running at the same time (not one after the other)
    assert a0 < b1 and b0 < a1, (a0, a1, b0, b1)
    # a stage no one copies from is not built (its RUN would fail the build)
    assert not any(e.step_id.startswith("unused") for e in built.steps)


def test_multi_stage_copy_from_and_from_stage(store: Store, ctx: Path, tmp_path: Path) -> None:
    write_tree(ctx, {"src/app.conf": "conf", "src/lib/x": "x", "other": "o"})
    kf = """FROM scratch AS build
COPY src /src
COPY other /src/lib/y
FROM build AS derived
LABEL stage=derived
FROM scratch
COPY --from=build /src/lib /lib
COPY --from=derived /src/app.conf /etc/
"""
    built = run_build(store, ctx, kf)
    root = built.rootfs(tmp_path / "r")
    assert sorted(os.listdir(root / "lib")) == ["x", "y"]
    assert (root / "etc/app.conf").read_text() == "conf"
    assert len(built.layers) == 2
    assert run_build(store, ctx).cached == [True, True, True, True]
    (ctx / "other").write_text("changed")
    again = run_build(store, ctx)
    # the build stage's second COPY misses, and so do both COPY --from that read it;
    # the first COPY of the build stage hits
    assert sorted(again.cached) == [False, False, False, True]


def test_from_missing_image(store: Store, ctx: Path) -> None:
    with pytest.raises(BuildError, match=r"Kubefile:1: image nothere:1 is not in the local store"):
        run_build(store, ctx, "FROM nothere:1\n")


def test_from_missing_image_calls_pull(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"f": "f"})
    base = run_build(store, ctx, "FROM scratch\nCOPY f /f\n", tags=["local/base:1"])
    asked: list[tuple[str, str | None]] = []

    class Blob:  # the shape of a registry progress event
        digest = "sha256:" + "ab" * 32
        done, total = 50, 100

    def pull(st: Store, ref: str, *, platform: str | None = None,
             progress: Callable[[object], None] | None = None) -> object:
        asked.append((ref, platform))
        assert progress is not None
        progress(Blob())
        st.tag(ref, base.result.manifest)
        return st.resolve(ref)

    built = run_build(store, ctx, "FROM registry.test/team/base:2\nCOPY f /g\n", pull=pull,
                      platform="linux/amd64")
    assert asked == [("registry.test/team/base:2", "linux/amd64")]
    assert BytesDone("1/2 pull abababababab", 50, 100) in built.events
    assert built.layers[0] == base.layers[0] and len(built.layers) == 2


@needs_root
def test_same_step_in_parallel_stages_runs_once(store: Store, ctx: Path, tmp_path: Path) -> None:
    # RUN cannot write outside the rootfs: each run leaves its own random bytes instead
    run = "RUN sleep 1 && head -c 16 /dev/urandom | od -An -tx1 > x"
    kf = f"FROM scratch AS a\n{run}\nFROM scratch AS b\n{run}\nFROM scratch\n" \
         "COPY --from=a /x /a\nCOPY --from=b /x /b\n"
    built = run_build(store, ctx, kf)
    root = built.rootfs(tmp_path / "r")
    assert (root / "a").read_text() == (root / "b").read_text()  # the same single run
    assert len((root / "a").read_text().split()) == 16
    assert sorted(built.cached) == [False, False, False, True]  # one RUN built, one reused
    assert len(built.layers) == 2


def test_base_without_history_keeps_layer_attribution(store: Store, ctx: Path) -> None:
    from kbuild.builder.inspect import inspect_image
    from kbuild.layerstore import TarEntry, pack_layer

    layer = pack_layer(store, [TarEntry("etc/os-release", "file", 0o644, data=b"ID=x\n",
                                        size=5)])
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}, "config": {}}
    store.tag("nohistory:1", store.write_image(config, [layer]))
    write_tree(ctx, {"f": "f"})
    run_build(store, ctx, "FROM nohistory:1\nLABEL a=b\nCOPY f /f\n", tags=["child:1"])
    layers = inspect_image(store, "child:1")["layers"]
    assert [x["createdBy"] for x in layers] == ["(layer of the base image without history)",
                                                "COPY f /f"]
