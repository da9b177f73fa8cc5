"""The multi-platform build of the Kubernetes image (build-platforms.sh) on a
small context: every component Kubefile, rewritten by arch-kubefile.sh, builds
an index whose platforms hold their own architecture's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kbuild.kubefile import parse

HERE = Path(__file__).resolve().parents[2] / "images" / "kubernetes"
ARCH_KUBEFILE = HERE / "arch-kubefile.sh"
COMPONENTS = sorted(p.parent.name for p in (HERE / "images").glob("*/Kubefile"))


def _rewrite(src: Path, dest: Path) -> str:
    subprocess.run([str(ARCH_KUBEFILE), str(src), str(dest)], check=True, timeout=30)
    return dest.read_text()


@pytest.mark.parametrize("kubefile", [HERE / "Kubefile",
                                      *(HERE / "images" / c / "Kubefile" for c in COMPONENTS)],
                         ids=lambda p: p.parent.name)
def test_every_copy_source_is_per_architecture(kubefile: Path, tmp_path: Path) -> None:
    text = _rewrite(kubefile, tmp_path / "Kubefile")
    copies = [line for line in text.splitlines() if line.startswith("COPY ")]
    assert copies and all(c.startswith("COPY ${TARGETARCH}/") for c in copies)
    assert "FROM scratch\nARG TARGETARCH\n" in text
    parse(text, "Kubefile")


def test_a_flag_on_copy_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.write_text("FROM scratch\nCOPY --chmod=755 bin/x /x\n")
    proc = subprocess.run([str(ARCH_KUBEFILE), str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1 and "COPY with flags" in proc.stderr


def _context(root: Path) -> None:
    """What build-platforms.sh stages, with one-line stand-ins for the binaries."""
    for arch in ("amd64", "arm64"):
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler",
                     "kube-proxy", "etcd", "etcdctl", "coredns", "pause", "flanneld",
                     "cni/flannel"):
            f = root / arch / "bin" / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"{arch} {name}\n")
        (root / arch / "nf" / "usr" / "sbin").mkdir(parents=True)
        (root / arch / "nf" / "usr" / "sbin" / "nft").write_text(f"{arch} nft\n")


@pytest.mark.integration
def test_components_build_as_indexes_of_both_platforms(tmp_path: Path) -> None:
    _context(tmp_path / "ctx")
    env = {k: v for k, v in os.environ.items() if k != "KBUILD_ROOT"}
    kb = [sys.executable, "-m", "kbuild.cli.main", "--root", str(tmp_path / "store")]
    for c in COMPONENTS:
        kubefile = tmp_path / f"{c}.Kubefile"
        _rewrite(HERE / "images" / c / "Kubefile", kubefile)
        subprocess.run([*kb, "build", "--progress", "plain", "--platform",
                        "linux/amd64,linux/arm64", "-f", str(kubefile), "-t", f"{c}:t",
                        str(tmp_path / "ctx")], check=True, capture_output=True, env=env,
                       timeout=300)  # fmt: skip
        seen = {}
        for arch in ("amd64", "arm64"):
            out = subprocess.run([*kb, "inspect", "--format", "json", "--platform",
                                  f"linux/{arch}", f"{c}:t"], check=True, capture_output=True,
                                 text=True, env=env, timeout=60).stdout  # fmt: skip
            data = json.loads(out)
            assert data["architecture"] == arch
            assert [p["platform"] for p in data["platforms"]] == ["linux/amd64", "linux/arm64"]
            seen[arch] = [layer["diffID"] for layer in data["layers"]]
        assert len(seen["amd64"]) == len(seen["arm64"])
        assert all(a != b for a, b in zip(seen["amd64"], seen["arm64"], strict=True)), c
