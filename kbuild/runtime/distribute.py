"""Layers to hosts, once.

Each host keeps a content-addressed layer store, ``<dataRoot>/layers/<hex>/``
(``hex`` = the layer's diffID without ``sha256:``), holding ``fs/`` (the
unpacked layer, an overlay lower dir) and the marker ``verified``. A layer
whose marker can be trusted is not sent again: one written in this boot, or
in an earlier one when the files still add up to the counts it records (a
power cut may have lost files that were never synced). Clusters sharing a
host share its store: each lists the layers it uses before any is sent
(``<dataRoot>/<cluster>/layers.list``, :func:`record_layers`), and a delete
removes only layers no other cluster lists; the rules are in
``scripts/layer-store.sh``.

A missing layer travels as ONE byte stream over an SSH exec channel into
``scripts/receive-layer.sh``: the blob as stored when the host can decompress
it (``zstd``/``gzip`` present), else the tar decompressed on this side. The
host unpacks it into a temp dir while hashing the stream exactly as it
arrives, and renames it into place only when that sha256 is right: the blob
digest for a compressed blob (this side checked, with
:func:`kbuild.runtime.layers.scan_layer`, that the blob decompresses to a safe
tar with the layer's diffID; hashing the blob instead of the tar costs the
host a third of the bytes and no extra copy), the diffID for a plain tar.
All hosts receive in parallel; one host receives up to :data:`LAYER_STREAMS`
layers at once, each on its own exec channel of the host's one connection
(unpacking a layer of many small files is bound by file creation on the
host, a layer of big files by decompression: side by side they overlap).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kbuild.layerstore import Store
from kbuild.runtime.executor import Executor
from kbuild.runtime.image import ImageInfo, Layer
from kbuild.runtime.layers import open_tar, scan_layer
from kbuild.runtime.remote import remote_script
from kbuild.runtime.runevents import BytesSent, HostStatus, Progress, emit

LAYER_STREAMS = 2
"""Layers one host receives at the same time."""


def layer_store(data_root: str) -> str:
    """The host's layer store directory."""
    return f"{data_root}/layers"


@dataclass
class HostLayers:
    """Which of an image's layers a host has and lacks."""

    host: str
    present: list[Layer] = field(default_factory=list)
    missing: list[Layer] = field(default_factory=list)

    @property
    def bytes_to_send(self) -> int:
        """Blob bytes of the missing layers."""
        return sum(layer.size for layer in self.missing)


def present_layers(conn: Executor, data_root: str, layers: Sequence[Layer]) -> set[str]:
    """Hex names of the layers the host has complete (read-only): their marker
    is from this boot, or from an earlier one and the files still add up
    (``scripts/layer-store.sh``)."""
    if not layers:
        return set()
    names = dict.fromkeys(layer.hex for layer in layers)
    out = conn.run(remote_script("present-layers.sh", layer_store(data_root), *names)).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def record_layers(conn: Executor, data_root: str, cluster: str, layers: Sequence[Layer]) -> None:
    """Create the data root and record the layers ``cluster`` uses, under the
    host lock, before looking which ones the host has."""
    hexes = dict.fromkeys(layer.hex for layer in layers)
    conn.run(remote_script("prepare-data-root.sh", data_root, cluster, *hexes))


def host_layers(conn: Executor, data_root: str, image: ImageInfo,
                layers: Sequence[Layer] | None = None) -> HostLayers:
    """Split the image's layers (or ``layers``, the rootfs's) into present and
    missing on one host."""
    layers = image.layers if layers is None else layers
    have = present_layers(conn, data_root, layers)
    hl = HostLayers(host=conn.name)
    seen: set[str] = set()
    for layer in layers:
        if layer.hex in have:
            hl.present.append(layer)
        elif layer.hex not in seen:
            hl.missing.append(layer)
        seen.add(layer.hex)
    return hl


def send_layer(
    conn: Executor,
    store: Store,
    data_root: str,
    layer: Layer,
    *,
    host_tools: frozenset[str],
    progress: Progress | None = None,
) -> None:
    """Send one layer as one stream; raises HostError when the host rejects it."""
    raw = layer.compression == "none" or layer.compression in host_tools
    mode = layer.compression if raw else "none"
    if mode == "none":
        want = layer.hex  # the host hashes the tar itself
    else:
        # The host checks the blob digest; that the blob holds the diffID's
        # tar is checked here, once per layer (a cached record on re-runs).
        scan_layer(store, layer)
        want = layer.digest.removeprefix("sha256:")
    cmd = remote_script("receive-layer.sh", layer_store(data_root), layer.hex, mode, want)
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        emit(progress, BytesSent(conn.name, layer.digest, done, layer.size if raw else 0))

    if raw:
        with store.open_blob(layer.digest) as blob:
            conn.run_with_input(cmd, blob, progress=on_bytes)
    else:
        with open_tar(store, layer) as stream:
            conn.run_with_input(cmd, stream, progress=on_bytes)


def send_missing(
    conn: Executor,
    store: Store,
    data_root: str,
    todo: HostLayers,
    *,
    host_tools: frozenset[str],
    progress: Progress | None = None,
) -> int:
    """Send every missing layer to one host; returns the blob bytes sent."""
    if not todo.missing:
        emit(progress, HostStatus(conn.name, "layers", f"all {len(todo.present)} present"))
        return 0
    total = len(todo.missing)

    def one(item: tuple[int, Layer]) -> int:
        i, layer = item
        what = f"layer {i}/{total} {layer.hex[:12]} ({layer.size} B)"
        emit(progress, HostStatus(conn.name, "sending", what))
        send_layer(conn, store, data_root, layer, host_tools=host_tools, progress=progress)
        return layer.size

    items = list(enumerate(todo.missing, 1))
    if len(items) == 1 or LAYER_STREAMS <= 1:
        sent = sum(one(item) for item in items)
    else:
        with ThreadPoolExecutor(max_workers=min(LAYER_STREAMS, len(items))) as pool:
            futures = [pool.submit(one, item) for item in items]
            errors = [f.exception() for f in futures]
        failed = [e for e in errors if e is not None]
        if failed:
            raise failed[0]
        sent = sum(f.result() for f in futures)
    emit(
        progress,
        HostStatus(conn.name, "layers", f"sent {len(todo.missing)}, {len(todo.present)} present"),
    )
    return sent
