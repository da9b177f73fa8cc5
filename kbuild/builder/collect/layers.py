"""Reading layers for the collection: the files to scan, and the registry blobs they hold.

Both read a layer blob as a tar stream (headers, and the data of the few
files wanted), never unpacking the whole layer.
"""

from __future__ import annotations

import contextlib
import gzip
import posixpath
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from kbuild.errors import BuildError
from kbuild.layerstore import Store

from ..state import BaseLayer

MAX_FILE = 64 << 20
"""Files larger than this are not manifests, charts or lists: not extracted."""
REGISTRY_BLOB_RE = re.compile(
    r"^registry/docker/registry/v2/blobs/sha256/[0-9a-f]{2}/([0-9a-f]{64})/data$")
RECORD_PREFIX = "registry-blobs:"
_DECOMPRESS: dict[str, Callable[[BinaryIO], IO[bytes]]] = {
    "zstd": lambda f: zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True),
    "gzip": lambda f: cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb")),
    "tar": lambda f: f,
}


@contextlib.contextmanager
def layer_tar(store: Store, layer: BaseLayer) -> Iterator[tarfile.TarFile]:
    """The layer as a tar stream (members in order, data readable once)."""
    media = layer.media_type
    kind = "zstd" if media.endswith("zstd") else "gzip" if media.endswith("gzip") else "tar"
    with store.open_blob(layer.digest) as raw:
        stream = _DECOMPRESS[kind](raw)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            yield tar


def _name(member: tarfile.TarInfo) -> str:
    return posixpath.normpath("/" + member.name).lstrip("/")


def extract_matching(store: Store, layers: list[BaseLayer], target: Path,
                     wanted: Callable[[str], bool]) -> None:
    """The files ``wanted`` accepts, as the layers leave them (whiteouts applied), under ``target``.

    Regular files and directories only (symlinks and devices are not read).
    """
    for layer in layers:
        with layer_tar(store, layer) as tar:
            for member in tar:
                name = _name(member)
                base = posixpath.basename(name)
                parent = posixpath.dirname(name)
                if base == ".wh..wh..opq":
                    if wanted(parent + "/x") or wanted(parent):
                        _clear(target / parent)
                    continue
                if base.startswith(".wh."):
                    hidden = posixpath.join(parent, base[len(".wh."):])
                    if wanted(hidden):
                        _remove(target / hidden)
                    continue
                if not name or not wanted(name):
                    continue
                _extract(tar, member, target, name)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, name: str) -> None:
    path = target / name
    if member.islnk():
        first = target / _name(tarfile.TarInfo(member.linkname))
        _remove(path)
        if first.is_file():  # the link's first name was extracted: same content
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(first, path)
        return
    if member.isdir():
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
        return
    if not member.isfile() or member.size > MAX_FILE:
        _remove(path)  # a lower layer's file is replaced by what is not read here
        return
    source = tar.extractfile(member)
    if source is None:
        raise BuildError(f"layer entry {name}: cannot read it")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove(path)
    with open(path, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _clear(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            _remove(child)


def layer_registry_blobs(store: Store, layer: BaseLayer) -> tuple[list[str], list[str]]:
    """(blob digests whose data the layer adds under ``registry/``, paths it hides).

    Read once per layer and kept in a ``build`` record (no blobs pinned).
    """
    key = RECORD_PREFIX + layer.diff_id
    record = store.get_record("build", key)
    if record is not None and isinstance(record.get("added"), list):
        return [str(d) for d in record["added"]], [str(p) for p in record.get("hidden", [])]
    added: list[str] = []
    hidden: list[str] = []
    with layer_tar(store, layer) as tar:
        for member in tar:
            name = _name(member)
            if not name.startswith("registry"):
                continue
            m = REGISTRY_BLOB_RE.match(name)
            base = posixpath.basename(name)
            if m:
                added.append("sha256:" + m.group(1))
            elif base == ".wh..wh..opq":
                hidden.append(posixpath.dirname(name))
            elif base.startswith(".wh."):
                hidden.append(posixpath.join(posixpath.dirname(name), base[len(".wh."):]))
    remember_registry_blobs(store, layer.diff_id, added, hidden)
    return added, hidden


def remember_registry_blobs(store: Store, diff_id: str, added: list[str],
                            hidden: list[str] | None = None) -> None:
    """Record what a layer adds under ``registry/`` (the collection writes it for its layer)."""
    store.put_record("build", RECORD_PREFIX + diff_id,
                     {"added": sorted(added), "hidden": sorted(hidden or []), "blobs": []})


def registry_blobs(store: Store, layers: list[BaseLayer]) -> set[str]:
    """The registry blobs ``layers`` (bottom first) leave in ``registry/``."""
    present: dict[str, str] = {}  # digest -> its data path
    for layer in layers:
        added, hidden = layer_registry_blobs(store, layer)
        for prefix in hidden:
            for digest in [d for d, p in present.items()
                           if p == prefix or p.startswith(prefix + "/")]:
                del present[digest]
        for digest in added:
            hexd = digest[len("sha256:"):]
            present[digest] = f"registry/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data"
    return set(present)


def prefix_filter(prefixes: list[str], exact: set[str]) -> Callable[[str], bool]:
    """A ``wanted`` for :func:`extract_matching`: under a prefix, or one of ``exact``."""
    def wanted(name: str) -> bool:
        if name in exact or any(name.startswith(e + "/") for e in exact):
            return True
        return any(name == p or name.startswith(p + "/") for p in prefixes)
    return wanted


