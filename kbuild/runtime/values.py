"""The one validation layer for values that reach a host.

Every value from a Clusterfile or a command-line flag that ends up in a
command, a path or a file on a host goes through one of these allow-lists
(the Clusterfile loader and the CLI share them). Each returns the value in
its canonical form or raises :class:`BadValue` with the reason; callers add
where the value came from. Commands are built with ``shlex.quote`` (argv by
construction) in any case; these checks keep values meaningful: a path that
names a system directory, two spellings of one address, a host alias that
smuggles a second ``/etc/hosts`` line are refused here.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

__all__ = [
    "BadValue",
    "app_name",
    "cluster_name",
    "data_root",
    "env_name",
    "env_value",
    "hostname",
    "ip_address",
    "ip_range",
    "label_key",
    "label_value",
    "port",
    "rootfs_path",
    "ssh_user",
]

MAX_RANGE = 4096

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$"
)
_ZONE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._@+=,~/-]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$")
_QUALIFIED = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")

SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/root", "/run", "/sbin", "/sys", "/usr", "/var/lib/containerd", "/var/lib/kubelet",
    "/var/lib/etcd", "/var/lib/dpkg", "/var/lib/apt", "/var/lib/systemd", "/var/log",
    "/var/cache", "/var/spool", "/var/run", "/var/lock",
)  # fmt: skip
"""Trees a dataRoot may not be in: kbuild chmods and deletes under its dataRoot."""

SHARED_DIRS = frozenset(
    {"/", "/var", "/var/lib", "/opt", "/srv", "/mnt", "/media", "/home", "/tmp", "/var/tmp",
     "/data", "/var/lib/kbuild"}
)  # fmt: skip
"""Directories other software owns: a dataRoot must be a directory below them."""


class BadValue(ValueError):
    """A value failed its allow-list; the message says why (no location)."""


def cluster_name(text: str) -> str:
    """A cluster name: a DNS label (lowercase letters, digits, ``-``; ≤ 63)."""
    if not _DNS_LABEL.match(text):
        raise BadValue("bad cluster name (lowercase letters, digits, '-'; at most 63)")
    if text == "layers":  # <dataRoot>/layers is the hosts' layer store; clusters sit beside it
        raise BadValue("'layers' is reserved (the hosts' layer store, <dataRoot>/layers)")
    return text


def app_name(text: str) -> str:
    """An app name (a directory under ``application/apps/``): a DNS label."""
    if not _DNS_LABEL.match(text):
        raise BadValue("bad app name (lowercase letters, digits, '-')")
    return text


def ip_address(text: str) -> str:
    """One host address in canonical form: IPv4-mapped IPv6 becomes IPv4, IPv6
    is compressed; a zone id (``fe80::1%eth0``) must be an interface name."""
    addr, sep, zone = text.strip().partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise BadValue("bad IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        if sep:
            raise BadValue("bad IP address (an IPv4-mapped address has no zone)")
        return str(ip.ipv4_mapped)
    if sep:
        if ip.version != 6 or not ip.is_link_local or not _ZONE.match(zone):
            raise BadValue("bad IPv6 zone (a link-local address and an interface name)")
        return f"{ip}%{zone}"
    return str(ip)


def ip_range(text: str) -> list[str]:
    """One address or an ``a-b`` range (same family, ``a <= b``, ≤ 4096 hosts)."""
    text = text.strip()
    if "-" not in text:
        return [ip_address(text)]
    first_text, _, last_text = text.partition("-")
    try:
        first = ipaddress.ip_address(_plain(first_text))
        last = ipaddress.ip_address(_plain(last_text))
    except BadValue:
        raise BadValue("bad IP range") from None
    if first.version != last.version or int(last) < int(first):
        raise BadValue("bad IP range")
    if int(last) - int(first) >= MAX_RANGE:
        raise BadValue(f"IP range larger than {MAX_RANGE} hosts")
    return [str(ipaddress.ip_address(n)) for n in range(int(first), int(last) + 1)]


def _plain(text: str) -> str:
    canonical = ip_address(text)
    if "%" in canonical:
        raise BadValue("bad IP range (no zone ids in ranges)")
    return canonical


def data_root(text: str) -> str:
    """Where hosts keep kbuild's data: an absolute path of plain characters,
    without ``.``/``..``, not a shared directory itself and not inside a
    system tree (kbuild sets its mode and deletes what it made below it)."""
    path = text.rstrip("/") or "/"
    if not path.startswith("/") or not _SAFE_PATH.match(path):
        raise BadValue("must be an absolute path of letters, digits and ._@+=,~/-")
    if any(part in (".", "..") for part in path.split("/")) or "//" in path:
        raise BadValue("must not contain ., .. or //")
    if path in SHARED_DIRS:
        raise BadValue("must be a directory of its own, not a shared one like /var/lib")
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            raise BadValue(f"must not be inside the system directory {tree}")
    return path


def rootfs_path(text: str) -> str:
    """A clean path relative to a cluster's rootfs (no ``..``, no control characters)."""
    if (
        not text
        or text.startswith("/")
        or any(ord(c) < 32 or c == "\x7f" for c in text)
        or posixpath.normpath(text) != text
        or text.split("/")[0] == ".."
    ):
        raise BadValue("must be a clean relative path inside the rootfs, without ..")
    return text


def env_name(text: str) -> str:
    """A variable name (scripts see those that are shell names; templates all)."""
    if not _ENV_NAME.match(text):
        raise BadValue("bad variable name")
    return text


def env_value(text: str) -> str:
    """A variable's value: any text but NUL (it reaches hosts quoted)."""
    if "\0" in text:
        raise BadValue("a NUL character in a value")
    return text


def hostname(text: str) -> str:
    """A DNS name for ``/etc/hosts`` (letters, digits, ``-`` and dots)."""
    if not _HOSTNAME.match(text):
        raise BadValue("bad host name (letters, digits, '-' and '.')")
    return text


def ssh_user(text: str) -> str:
    """A login name as useradd accepts it."""
    if not _USER.match(text):
        raise BadValue("bad user name")
    return text


def port(text: str) -> int:
    """A TCP port 1–65535."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise BadValue("bad port")
    return int(text)


def label_key(text: str) -> str:
    """A Kubernetes label or taint key (``[prefix/]name``)."""
    if not _QUALIFIED.match(text):
        raise BadValue("bad label key")
    return text


def label_value(text: str) -> str:
    """A Kubernetes label or taint value (≤ 63, alphanumerics at the ends)."""
    if not _LABEL_VALUE.match(text):
        raise BadValue("bad label value")
    return text
