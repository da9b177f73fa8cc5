"""The read-only checks run on every host before anything changes.

One command per host (``scripts/preflight.sh``) reports the architecture,
whether sudo gives root, systemd, the tools present, and the free space and
file system type where ``dataRoot`` will be. The checks that need the image
(architecture, disk space for the layers still to send) are made against it.
All hosts are checked; all problems are reported together (the preflight
phase, :mod:`kbuild.runtime.phases.preflight`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kbuild.errors import HostError
from kbuild.layerstore import oci_arch
from kbuild.runtime.executor import Executor
from kbuild.runtime.remote import remote_script

REQUIRED_TOOLS = (
    "sh", "tar", "sha256sum", "systemctl", "mount", "umount", "mkfifo", "tee", "mktemp",
    "find", "mknod", "grep", "cmp", "head", "stat", "mv", "flock", "awk",
)  # fmt: skip
"""Commands a host must have (coreutils, tar, findutils, util-linux, systemd, awk);
``scripts/preflight.sh`` checks them (``flock``: the host's layer store lock)."""

SPACE_MARGIN = 64 * 1024 * 1024
UNSUPPORTED_FS = frozenset({"overlayfs", "aufs"})


@dataclass(frozen=True)
class HostFacts:
    """What the preflight found on one host."""

    host: str
    arch: str
    uid: int
    systemd: bool
    tools: frozenset[str]
    missing: tuple[str, ...]
    free_bytes: int
    fstype: str
    data_root_exists: bool
    overlay: bool


def parse_facts(host: str, text: str) -> HostFacts:
    """Parse ``preflight.sh`` output."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            kv[key.strip()] = value.strip()
    try:
        return HostFacts(
            host=host,
            arch=oci_arch(kv.get("arch", "")),
            uid=int(kv.get("uid", "-1")),
            systemd=kv.get("systemd") == "yes",
            tools=frozenset(kv.get("tools", "").split()),
            missing=tuple(kv.get("missing", "").split()),
            free_bytes=int(kv.get("free_kb") or 0) * 1024,
            fstype=kv.get("fstype", ""),
            data_root_exists=kv.get("data_root_exists") == "yes",
            overlay=kv.get("overlay") == "yes",
        )
    except ValueError:
        raise HostError(
            host, "preflight gave unreadable output", output_tail=text[-2000:]
        ) from None


def gather_facts(conn: Executor, data_root: str) -> HostFacts:
    """Run the read-only host check (as root through sudo when needed)."""
    res = conn.run(remote_script("preflight.sh", data_root))
    return parse_facts(conn.name, res.stdout)


def problems(
    facts: HostFacts, *, image_arch: str, need_bytes: int, data_root: str, relay_bytes: int = 0
) -> list[str]:
    """What keeps this host from running the image (empty when it can).
    ``relay_bytes``: the compressed blobs a relay's tree root keeps until the
    run ends (any host lacking a layer may be its root)."""
    out: list[str] = []
    if facts.uid != 0:
        out.append(f"commands do not run as root (uid {facts.uid}); the user needs sudo")
    if not facts.systemd:
        out.append("systemd is not running (/run/systemd/system is missing)")
    if facts.missing:
        out.append("missing commands: " + ", ".join(facts.missing))
    if image_arch and facts.arch != image_arch:
        out.append(f"architecture {facts.arch} does not match the image's {image_arch}")
    if not facts.overlay:
        out.append("the kernel has no overlay file system")
    if facts.fstype in UNSUPPORTED_FS:
        out.append(
            f"dataRoot {data_root} is on {facts.fstype}, which cannot hold an overlay upper dir; "
            "set spec.dataRoot to a directory on a real file system"
        )
    total = need_bytes + relay_bytes + SPACE_MARGIN
    if total > facts.free_bytes:
        relayed = f", a relay's copy of their blobs {_mb(relay_bytes)}" if relay_bytes else ""
        out.append(
            f"not enough disk space for {data_root}: need {_mb(total)} (the layers "
            f"{_mb(need_bytes)}{relayed}, margin {_mb(SPACE_MARGIN)}), have {_mb(facts.free_bytes)}"
        )
    return out


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
