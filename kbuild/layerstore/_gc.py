"""Garbage collection and consistency checks of the store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kbuild.errors import StoreError

from ._schema import parse_document

if TYPE_CHECKING:
    from ._layout import Layout

BUILD_RECORDS = "build"
"""The record kind of the build cache (what ``gc(records=True)`` drops)."""
_HEX_RE = re.compile(r"^[a-f0-9]{64}$")


@dataclass
class GcReport:
    """What a :meth:`Store.gc` run removed."""

    blobs_removed: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    temp_removed: int = 0
    records_removed: int = 0
    snapshots_removed: int = 0
    blobs_kept: int = 0


def reachable(store: Layout) -> set[str]:
    """Every blob digest an image (index.json) or a record reaches."""
    roots = [desc.digest for _, desc in store.entries()]
    for _, _, data in store.records():
        roots += [d for d in data.get("blobs", []) if isinstance(d, str)]
    return set(store.walk(*(d for d in roots if d.startswith("sha256:"))))


def _older_than(path: os.DirEntry[str], seconds: float, now: float) -> bool:
    try:
        return now - path.stat(follow_symlinks=False).st_mtime >= seconds
    except FileNotFoundError:
        return False


def gc(store: Layout, *, records: bool = False, temp_grace: float = 3600.0,
       blob_grace: float = 60.0) -> GcReport:
    """Remove what no image or record reaches.

    With ``records=True`` the build cache records (kind ``"build"``) go first;
    records of other kinds (registry, runtime) stay. Blobs written in
    the last ``blob_grace`` seconds are kept (a build that has just written
    a layer records it right after), temp files younger than ``temp_grace``
    too (a download may still be writing them).
    """
    report = GcReport()
    now = time.time()
    with store.lock():
        if records:
            report.records_removed = store.delete_records(BUILD_RECORDS)
        keep = reachable(store)
        with os.scandir(store.blob_dir) as it:
            for de in it:
                digest = "sha256:" + de.name
                if not _HEX_RE.match(de.name) or digest in keep:
                    report.blobs_kept += 1
                    continue
                if not _older_than(de, blob_grace, now):
                    report.blobs_kept += 1
                    continue
                size = de.stat(follow_symlinks=False).st_size
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(de.path)
                    report.blobs_removed.append(digest)
                    report.bytes_freed += size
        with os.scandir(store.tmp_dir) as it:
            for de in it:
                if _older_than(de, temp_grace, now):
                    with contextlib.suppress(FileNotFoundError):
                        if de.is_dir(follow_symlinks=False):
                            shutil.rmtree(de.path)
                        else:
                            os.unlink(de.path)
                        report.temp_removed += 1
        report.snapshots_removed = _gc_snapshots(store, now, temp_grace, blob_grace)
    return report


def _gc_snapshots(store: Layout, now: float, temp_grace: float, blob_grace: float) -> int:
    removed = 0
    with os.scandir(store.snapshots_dir) as it:
        entries = list(it)
    for de in entries:
        if de.name.startswith(".tmp-"):
            if _older_than(de, temp_grace, now):
                shutil.rmtree(de.path, ignore_errors=True)
                removed += 1
            continue
        if not de.name.endswith(".blob"):
            continue
        hexpart = de.name[: -len(".blob")]
        try:
            blob = open(de.path).read().strip()  # noqa: SIM115
        except OSError:
            continue
        if store.has_blob(blob) if blob.startswith("sha256:") else False:
            continue
        snap = store.snapshots_dir / hexpart
        if snap.exists() and not _older_than(de, blob_grace, now):
            continue
        shutil.rmtree(snap, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(de.path)
        removed += 1
    return removed


def fsck(store: Layout) -> list[str]:
    """Re-hash every blob and check that every image and record is complete."""
    problems: list[str] = []
    layout = store.oci_dir / "oci-layout"
    try:
        doc = parse_document(layout.read_bytes(), "layout", what=str(layout))
        if doc["imageLayoutVersion"] != "1.0.0":
            problems.append(f"{layout}: unexpected imageLayoutVersion")
    except OSError as exc:
        problems.append(f"{layout}: {exc.strerror}")
    except StoreError as exc:
        problems.append(str(exc))
    with os.scandir(store.blob_dir) as it:
        names = sorted(de.name for de in it)
    for name in names:
        path = store.blob_dir / name
        if not _HEX_RE.match(name):
            problems.append(f"{path}: not a sha256 blob name")
            continue
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            problems.append(f"{path}: cannot read: {exc.strerror}")
            continue
        if h.hexdigest() != name:
            problems.append(f"blob sha256:{name} is corrupt: content hashes to "
                            f"sha256:{h.hexdigest()}")
    try:
        entries = store.entries()
    except StoreError as exc:
        return [*problems, str(exc)]
    for ref, desc in entries:
        what = ref.familiar if ref is not None else desc.digest[7:19]
        problems += [f"image {what}: blob {d} is missing" for d in store.missing_blobs(desc.digest)]
    for kind, key, data in store.records():
        for d in data.get("blobs", []):
            if isinstance(d, str) and d.startswith("sha256:") and not store.has_blob(d):
                problems.append(f"{kind} record {key[:40]!r}: blob {d} is missing")
    return problems

