"""Helpers of the runtime end-to-end tests: the example image, the CLI, host snapshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from kbuild.layerstore import oci_arch
from kbuild.runtime.ssh import Connection

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "hello-service"
IMAGE = "hello-service:e2e"


@dataclass
class Env:
    """Where a test's store and cluster state live."""

    root: Path
    state: Path

    def vars(self) -> dict[str, str]:
        """Environment of kbuild commands of this test."""
        env = dict(os.environ)
        env["KBUILD_ROOT"] = str(self.root)
        env["KBUILD_STATE_DIR"] = str(self.state)
        env.pop("KBUILD_DEBUG", None)
        return env


def build_example(env: Env, workdir: Path, tag: str = IMAGE, arches: tuple[str, ...] = ()) -> None:
    """Build examples/hello-service (Go binaries, then ``kbuild build``) into env's
    store: for this machine, or an index of ``arches`` (cross-compiled)."""
    src = workdir / "hello-service"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("bin"))
    for arch in arches or (oci_arch(os.uname().machine),):
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w",
             "-o", str(src / "bin" / arch / "hello-service"), "."],
            cwd=src / "src", check=True, capture_output=True, timeout=300,
            env={**os.environ, "CGO_ENABLED": "0", "GOARCH": arch},
        )  # fmt: skip
    platform = ["--platform", ",".join(f"linux/{a}" for a in arches)] if arches else []
    kbuild(env, "build", "-t", tag, *platform, "--progress", "plain", str(src), timeout=300)


def kbuild(
    env: Env, *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the kbuild CLI in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "kbuild.cli.main", *args],
        env=env.vars(), capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kbuild {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def get(ip: str, port: int = 8080, *, attempts: int = 20) -> str:
    """The hello-service's answer (bounded retries while the service starts)."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=3) as r:
                return r.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            last = exc
            time.sleep(0.25)
    raise AssertionError(f"no answer from {ip}:{port}: {last}")


def refused(ip: str, port: int = 8080) -> bool:
    """True when nothing listens on ip:port."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=3):
            return False
    except (urllib.error.URLError, OSError):
        return True


SNAPSHOT = r"""
echo '--- units'; find /etc/systemd/system -xdev | sort
systemctl list-units --all --plain --no-legend | grep -i -e kbuild -e hello | sort
echo '--- mounts'; awk '$1 == "overlay" && $2 != "/" {print $2}' /proc/self/mounts | sort
echo '--- data'; ls -a "$1" 2>&1
echo '--- etc'; ls -a /etc | sort
echo '--- hosts'; cat /etc/hosts
echo '--- root'; ls -a /root | sort
echo '--- processes'; ps -eo comm= | grep -v -x -e ps -e sh -e sort -e grep -e awk \
    -e sshd -e sudo -e systemd -e '(sd-pam)' \
    -e systemd-userwor -e systemd-userdbd | sort -u
"""


def snapshot(conn: Connection, data_root: str) -> str:
    """What kbuild could leave on a host: units, mounts, data, /etc, processes."""
    return conn.run("sh -c " + _q(SNAPSHOT) + " snapshot " + _q(data_root)).stdout


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def clusterfile(
    name: str,
    image: str,
    masters: list[str],
    nodes: list[str],
    *,
    ssh: str,
    data_root: str,
    extra_spec: str = "",
    docs: str = "",
) -> str:
    """A Clusterfile text."""
    nodes_line = f"  - {{ips: [{', '.join(nodes)}], roles: [node]}}\n" if nodes else ""
    return (
        "apiVersion: sealer.io/v2\nkind: Cluster\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  image: {image}\n"
        f"  ssh: {ssh}\n"
        f"  dataRoot: {data_root}\n"
        f"{extra_spec}"
        "  hosts:\n"
        f"  - {{ips: [{', '.join(masters)}], roles: [master]}}\n"
        f"{nodes_line}" + (f"---\n{docs}" if docs else "")
    )
