"""Calling podman: one function with bounded time and errors that say what failed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping

from kbuild.errors import ClusterError, HostError
from kbuild.runtime.provider import ProviderEvent

__all__ = ["NAME_RE", "Progress", "exec_in", "label_args", "podman", "runtime_args"]

Progress = Callable[[ProviderEvent], None]
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def podman(
    *args: str,
    input: bytes | None = None,
    timeout: float = 120.0,
    check: bool = True,
    what: str = "podman",
) -> subprocess.CompletedProcess[bytes]:
    """Run ``podman ARGS`` (bounded by ``timeout``); ``check`` raises ClusterError
    with podman's last stderr lines."""
    cmd = ["podman", *args]
    try:
        proc = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ClusterError(
            "podman is not installed", hint="install podman to use --provider podman"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{what}: `podman {args[0]}` did not finish in {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-10:]
        raise ClusterError(
            f"{what}: `podman {' '.join(args[:2])}` failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    return proc


def runtime_args() -> list[str]:
    """``--runtime runc`` when runc is there: crun refuses this machine's
    hybrid cgroup layout, runc boots systemd in it."""
    env = os.environ.get("KBUILD_PODMAN_RUNTIME")
    if env:
        return ["--runtime", env]
    path = shutil.which("runc") or shutil.which("runc", path="/usr/sbin:/usr/bin:/sbin")
    return ["--runtime", path] if path else []


def exec_in(
    container: str, script: str, *, input: bytes | None = None, timeout: float = 60
) -> None:
    """Run ``sh -c script`` in a host container; secrets go through ``input`` only."""
    proc = podman(
        "exec", "-i", container, "sh", "-c", script,
        input=input, timeout=timeout, check=False, what=container,
    )  # fmt: skip
    if proc.returncode != 0:
        raise HostError(
            container,
            "setting up the host failed",
            command=script,
            exit_status=proc.returncode,
            output_tail="\n".join(proc.stderr.decode(errors="replace").splitlines()[-20:]),
        )


def label_args(labels: Mapping[str, str]) -> list[str]:
    """``--label k=v`` for each label."""
    out: list[str] = []
    for k, v in labels.items():
        out += ["--label", f"{k}={v}"]
    return out
