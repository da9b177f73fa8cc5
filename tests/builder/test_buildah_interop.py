"""Interoperability: buildah builds the same COPY-only file; both images hold the same tree."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.layerstore import Store, unpack_layer

from .util import run_build, write_tree

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed"),
]

KUBEFILE = """FROM scratch
COPY bin /usr/bin/
COPY manifests /manifests
COPY etc/kubeadm.yml /etc/kubernetes/kubeadm.yml
COPY *.sh /scripts/
COPY links /links
"""


def _tree(root: Path) -> dict[str, tuple[str, int, str]]:
    """path → (type, permission bits, content digest or link target); dirs by type only."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, "")
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes().hex())
    return out


@pytest.fixture()
def buildah(tmp_path: Path) -> Iterator[list[str]]:
    """buildah with its own storage under tmp_path (removed afterwards)."""
    storage = tmp_path / "buildah"
    cmd = ["buildah", "--root", str(storage / "root"), "--runroot", str(storage / "run"),
           "--storage-driver", "vfs"]
    try:
        yield cmd
    finally:
        subprocess.run([*cmd, "rm", "--all"], capture_output=True, timeout=120, check=False)
        subprocess.run([*cmd, "rmi", "--all", "--force"], capture_output=True, timeout=120,
                       check=False)
        subprocess.run(["umount", "-R", str(storage)], capture_output=True, check=False)
        shutil.rmtree(storage, ignore_errors=True)


def test_same_tree_as_buildah(store: Store, ctx: Path, tmp_path: Path,
                              buildah: list[str]) -> None:
    write_tree(ctx, {
        "bin/kubeadm": b"\x7fELF" + os.urandom(4096),
        "bin/kubectl": b"\x7fELF" + os.urandom(1024),
        "manifests/a.yaml": "a: 1\n",
        "manifests/sub/b.yml": "b: 2\n",
        "etc/kubeadm.yml": "kind: ClusterConfiguration\n",
        "init.sh": "#!/bin/sh\necho init\n",
        "clean.sh": "#!/bin/sh\necho clean\n",
        "links/target.txt": "t",
    })
    (ctx / "bin/kubeadm").chmod(0o755)
    (ctx / "init.sh").chmod(0o750)
    os.symlink("target.txt", ctx / "links/rel")
    os.symlink("/etc/hostname", ctx / "links/abs")
    (ctx / "Containerfile").write_text(KUBEFILE)
    built = run_build(store, ctx, KUBEFILE)
    ours = built.rootfs(tmp_path / "ours")

    subprocess.run([*buildah, "bud", "--layers", "--isolation", "chroot", "-f",
                    str(ctx / "Containerfile"), "-t", "interop:test", str(ctx)],
                   check=True, capture_output=True, timeout=300)
    oci = tmp_path / "oci"
    subprocess.run([*buildah, "push", "interop:test", f"oci:{oci}"], check=True,
                   capture_output=True, timeout=300)
    index = json.loads((oci / "index.json").read_text())
    mdigest = index["manifests"][0]["digest"]
    manifest = json.loads((oci / "blobs/sha256" / mdigest[7:]).read_text())
    theirs = tmp_path / "theirs"
    for layer in manifest["layers"]:
        with open(oci / "blobs/sha256" / layer["digest"][7:], "rb") as f:
            unpack_layer(f, theirs, media_type=None)

    mine, other = _tree(ours), _tree(theirs)
    assert mine == other, {k: (mine.get(k), other.get(k))
                           for k in set(mine) | set(other) if mine.get(k) != other.get(k)}
    assert mine["links/rel"] == ("link", 0, "target.txt")
    assert mine["scripts/init.sh"][1] == 0o750
