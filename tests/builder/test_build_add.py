"""ADD: local archives are extracted, URLs downloaded (from a local server), checksums checked."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import zstandard

from kbuild.errors import BuildError, DigestMismatch
from kbuild.layerstore import Store

from .util import run_build, write_tree


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("comp", ["tar", "tar.gz", "tar.zst"])
def test_add_extracts_local_archives(store: Store, ctx: Path, comp: str) -> None:
    raw = _tar_bytes({"pkg/bin/tool": b"tool", "pkg/README": b"readme"})
    if comp == "tar.gz":
        import gzip

        raw = gzip.compress(raw)
    elif comp == "tar.zst":
        raw = zstandard.ZstdCompressor().compress(raw)
    write_tree(ctx, {f"a.{comp}": raw})
    built = run_build(store, ctx, f"FROM scratch\nADD a.{comp} /opt/\nCOPY a.{comp} /raw/\n")
    members = built.layer_members(0)
    assert members["opt/pkg/bin/tool"].size == 4
    assert f"opt/a.{comp}" not in members
    assert f"raw/a.{comp}" in built.layer_members(1)  # COPY never extracts


def test_add_plain_file_is_copied(store: Store, ctx: Path) -> None:
    write_tree(ctx, {"notes.gz": b"\x1f\x8bnot really gzip"})
    members = run_build(store, ctx, "FROM scratch\nADD notes.gz /n/\n").layer_members(0)
    assert "n/notes.gz" in members


class _Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture()
def server() -> Iterator[tuple[str, type[_Handler]]]:
    """An HTTP server on 127.0.0.1 serving ``_Handler.files``."""
    handler = type("H", (_Handler,), {"files": {}, "hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_add_url_with_checksum(store: Store, ctx: Path,
                               server: tuple[str, type[_Handler]]) -> None:
    base, handler = server
    body = b"apiVersion: v1\nkind: Namespace\n"
    handler.files["/dl/ns.yaml"] = body
    good = "sha256:" + hashlib.sha256(body).hexdigest()
    kf = f"FROM scratch\nADD --checksum={good} {base}/dl/ns.yaml /manifests/\n"
    built = run_build(store, ctx, kf)
    tar = built.layer_tar(0)
    assert tar.extractfile("manifests/ns.yaml").read() == body  # type: ignore[union-attr]
    # with a checksum, a cache hit needs no download at all
    handler.hits.clear()
    assert run_build(store, ctx).cached == [True]
    assert handler.hits == []
    bad = "sha256:" + "0" * 64
    (ctx / "Kubefile").write_text(f"FROM scratch\nADD --checksum={bad} {base}/dl/ns.yaml /m/\n")
    with pytest.raises(DigestMismatch, match=good):
        run_build(store, ctx)


def test_add_url_without_checksum_keys_on_content(store: Store, ctx: Path,
                                                  server: tuple[str, type[_Handler]]) -> None:
    base, handler = server
    handler.files["/f.txt"] = b"one"
    kf = f"FROM scratch\nADD {base}/f.txt /data/file\n"
    assert run_build(store, ctx, kf).cached == [False]
    assert run_build(store, ctx).cached == [True]
    handler.files["/f.txt"] = b"two"
    built = run_build(store, ctx)
    assert built.cached == [False]
    assert built.layer_tar(0).extractfile("data/file").read() == b"two"  # type: ignore[union-attr]


def test_add_url_http_error_names_line(store: Store, ctx: Path,
                                       server: tuple[str, type[_Handler]]) -> None:
    base, _ = server
    with pytest.raises(BuildError, match=r"Kubefile:2: downloading .*/missing failed: HTTP 404"):
        run_build(store, ctx, f"FROM scratch\nADD {base}/missing /x\n")


def test_app_from_url(store: Store, ctx: Path, server: tuple[str, type[_Handler]]) -> None:
    base, handler = server
    handler.files["/dash.yaml"] = b"kind: Deployment\n"
    built = run_build(store, ctx, f"FROM scratch\nAPP dash {base}/dash.yaml\n")
    assert "application/apps/dash/dash.yaml" in built.layer_members(0)
    meta = built.config["config"]["Labels"]["io.kbuild.apps"]
    assert meta == "dash"
