"""Layers unpacked once under ``root/snapshots/<diffid-hex>/`` for overlay lower dirs."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from kbuild.fsutil import atomic_write, fsync_dir

from ._blobs import check_digest
from ._unpack import unpack_verified

if TYPE_CHECKING:
    from ._layout import Layout


def snapshot(store: Layout, diff_id: str, blob_digest: str) -> Path:
    """Unpack the layer (verifying digest and diffID) unless already there.

    Whiteouts are kept in overlayfs form. The directory appears atomically
    (unpacked into a temp dir, then renamed); ``<hex>.blob`` next to it names
    the blob it came from (for GC).
    """
    hexpart = check_digest(diff_id)
    check_digest(blob_digest)
    final = store.snapshots_dir / hexpart
    if final.is_dir():
        return final
    tmp = store.snapshots_dir / f".tmp-{hexpart[:16]}-{secrets.token_hex(6)}"
    try:
        with store.open_blob(blob_digest) as f:
            unpack_verified(f, tmp, media_type=None, diff_id=diff_id, digest=blob_digest,
                            allow_devices=True, whiteouts="overlay")
        atomic_write(store.snapshots_dir / f"{hexpart}.blob", (blob_digest + "\n").encode(),
                     tmp_dir=store.tmp_dir)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp)  # another process made it first
        fsync_dir(store.snapshots_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return final
