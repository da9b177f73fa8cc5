"""The host image: a Debian root filesystem that boots systemd and sshd.

Built once with debootstrap, prepared by ``host-prepare.sh``, cached as a
tarball outside the repository and imported once as a podman image; nothing
is rebuilt while both exist.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kbuild.errors import ClusterError
from kbuild.layerstore import oci_arch
from kbuild.runtime.provider import ProviderEvent
from kbuild.runtime.providers.podman.command import Progress, podman

__all__ = ["BASE_PACKAGES", "HostImage", "apt_mirror", "ensure_host_image", "host_cache_dir"]

BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "procps",
    "sudo",
)
IMAGE_REPOSITORY = "localhost/kbuild-host"
QEMU_BINFMT = {"arm64": "aarch64", "amd64": "x86_64", "ppc64le": "ppc64le", "s390x": "s390x"}
"""OCI architecture → the name of its qemu-user-static binfmt_misc entry."""
PREPARE_SCRIPT = Path(__file__).with_name("host-prepare.sh")


@dataclass(frozen=True)
class HostImage:
    """A host root filesystem: Debian suite plus the packages debootstrap adds,
    for this machine's architecture or (``arch``, a Debian/OCI name such as
    ``arm64``) another one, run under qemu-user-static through binfmt_misc."""

    suite: str = "bookworm"
    packages: tuple[str, ...] = BASE_PACKAGES
    arch: str = ""

    @property
    def key(self) -> str:
        """Short hash of the suite, the package list and the prepare script."""
        h = hashlib.sha256()
        h.update(self.suite.encode() + b"\0")
        for p in sorted(set(self.packages)):
            h.update(p.encode() + b"\0")
        h.update(PREPARE_SCRIPT.read_bytes())
        return h.hexdigest()[:12]

    @property
    def _name(self) -> str:
        # this machine's image keeps the name it has always had (its cache stays valid)
        return f"{self.suite}-{self.arch}-{self.key}" if self.arch else f"{self.suite}-{self.key}"

    @property
    def tag(self) -> str:
        """The podman image name, ``localhost/kbuild-host:<suite>[-<arch>]-<key>``."""
        return f"{IMAGE_REPOSITORY}:{self._name}"

    def tarball(self, cache_dir: Path) -> Path:
        """Where the cached root filesystem tarball lives."""
        return cache_dir / f"debian-{self._name}.tar"


def host_cache_dir() -> Path:
    """``$KBUILD_HOST_CACHE``, else ``/var/cache/kbuild/hosts`` (root) or
    ``$XDG_CACHE_HOME/kbuild/hosts``."""
    env = os.environ.get("KBUILD_HOST_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/kbuild/hosts")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kbuild" / "hosts"


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (for debootstrap)."""
    env = os.environ.get("KBUILD_DEBIAN_MIRROR")
    if env:
        return env
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            m = re.match(r"^URIs:\s*(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
            m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and "security" not in m.group(1):
                return m.group(1)
    return "http://deb.debian.org/debian"


def _image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_tarball(spec: HostImage, dest: Path, progress: Progress | None) -> None:
    if shutil.which("debootstrap") is None:
        raise ClusterError(
            "debootstrap is needed to build the host image",
            hint="apt-get install debootstrap",
        )
    if progress:
        progress(ProviderEvent("image-build", spec.tag, "debootstrap " + spec.suite))
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        rootfs = work / "rootfs"
        cmd = [
            "debootstrap", "--variant=minbase", *_arch_args(spec),
            "--include=" + ",".join(spec.packages), spec.suite, str(rootfs), apt_mirror(),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, timeout=1800, check=False)
        if proc.returncode != 0:
            log = (rootfs / "debootstrap" / "debootstrap.log")
            tail = proc.stderr.decode(errors="replace")
            if log.exists():
                tail += log.read_text(errors="replace")
            raise ClusterError(
                f"debootstrap {spec.suite} failed (exit {proc.returncode}): "
                + " | ".join(tail.strip().splitlines()[-8:])
            )
        prep = subprocess.run(
            ["sh", str(PREPARE_SCRIPT), str(rootfs)], capture_output=True, timeout=120, check=False
        )
        if prep.returncode != 0:
            raise ClusterError(
                f"{PREPARE_SCRIPT.name} failed: " + prep.stderr.decode(errors="replace").strip()
            )
        tmp = work / "rootfs.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tmp), "."],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _arch_args(spec: HostImage) -> list[str]:
    """``--arch`` for a foreign architecture, whose binaries must run here."""
    if not spec.arch:
        return []
    qemu = QEMU_BINFMT.get(spec.arch, spec.arch)
    if spec.arch != _native_arch() and not Path(f"/proc/sys/fs/binfmt_misc/qemu-{qemu}").exists():
        raise ClusterError(
            f"a {spec.arch} host image needs {spec.arch} binaries to run on this machine: "
            f"/proc/sys/fs/binfmt_misc/qemu-{qemu} is not registered",
            hint="apt-get install qemu-user-static (binfmt_misc must be mounted: "
                 "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; "
                 f"update-binfmts --enable qemu-{qemu})",
        )
    return ["--arch", spec.arch]


def _native_arch() -> str:
    return oci_arch(os.uname().machine)


def ensure_host_image(
    spec: HostImage | None = None,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> str:
    """Return the podman image tag of the host image, building what is missing.

    The tarball is built with debootstrap only when it is not in the cache;
    the podman image is imported only when podman lacks it. A file lock in the
    cache directory keeps two processes from building it at the same time.
    """
    spec = spec or HostImage()
    cache = cache_dir or host_cache_dir()
    if _image_exists(spec.tag):
        return spec.tag
    with _file_lock(cache / ".lock"):
        if _image_exists(spec.tag):
            return spec.tag
        tarball = spec.tarball(cache)
        if not tarball.exists():
            _build_tarball(spec, tarball, progress)
        if progress:
            progress(ProviderEvent("image-import", spec.tag, str(tarball)))
        podman(
            "import", "--change", "CMD=/sbin/init", *(["--arch", spec.arch] if spec.arch else []),
            str(tarball), spec.tag,
            timeout=600, what="host image",
        )  # fmt: skip
    return spec.tag
