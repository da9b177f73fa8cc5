"""HTTP plumbing of the registry client: TLS per registry, timeouts, retry policy.

CA certificates for a registry are read from ``certs.d/<host[:port]>/`` in
every one of these directories that exists (podman's and containerd's
layout: ``*.crt`` are CAs, ``*.cert`` + ``*.key`` a client certificate):
``$KBUILD_CERTS_D`` (a ``:``-separated list), ``$XDG_CONFIG_HOME/kbuild/certs.d``
(``~/.config/kbuild/certs.d``), ``~/.config/containers/certs.d``,
``/etc/containers/certs.d`` and ``/etc/docker/certs.d``.
"""

from __future__ import annotations

import email.utils
import ipaddress
import os
import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kbuild import __version__

USER_AGENT = f"kbuild/{__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(connect=15.0, read=120.0, write=120.0, pool=120.0)


def certs_d_dirs() -> list[Path]:
    """The certs.d directories searched, in order."""
    dirs: list[Path] = []
    extra = os.environ.get("KBUILD_CERTS_D")
    if extra:
        dirs += [Path(p) for p in extra.split(os.pathsep) if p]
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs += [
        config_home / "kbuild" / "certs.d",
        config_home / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    ]
    return dirs


def host_cert_dirs(host: str) -> list[Path]:
    """The existing ``certs.d/<host>`` directories for ``host`` (``name[:port]``)."""
    return [d / host for d in certs_d_dirs() if (d / host).is_dir()]


def ssl_context(host: str, tls_verify: bool = True) -> ssl.SSLContext:
    """The TLS context for ``host``: system CAs plus certs.d, or no checks at all."""
    if not tls_verify:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
    for directory in host_cert_dirs(host):
        for entry in sorted(directory.iterdir()):
            if entry.suffix == ".crt" and tls_verify:
                ctx.load_verify_locations(cafile=str(entry))
            elif entry.suffix == ".cert":
                key = entry.with_suffix(".key")
                if key.exists():
                    ctx.load_cert_chain(str(entry), str(key))
    return ctx


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (with or without a port)."""
    name = host
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def make_http_client(host: str, *, tls_verify: bool = True,
                     timeout: httpx.Timeout = DEFAULT_TIMEOUT, pool: int = 8) -> httpx.Client:
    """An httpx client for one registry host (connection pool sized for ``pool`` workers)."""
    return httpx.Client(
        verify=ssl_context(host, tls_verify),
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        limits=httpx.Limits(max_connections=pool + 2, max_keepalive_connections=pool + 2),
        follow_redirects=False,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in total time."""

    attempts: int = 6
    max_time: float = 120.0
    base: float = 0.5
    cap: float = 20.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before attempt ``attempt + 1`` (``attempt`` starts at 1)."""
        backoff = random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))
        if retry_after is not None:
            return max(backoff, min(retry_after, self.max_retry_after))
        return backoff


RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    """429, 408 and 5xx are worth another try; 401/403/404 and other 4xx never."""
    return status in RETRY_STATUS or 500 <= status < 600


def describe_transport_error(exc: Exception) -> str:
    """A short, secret-free text for a connection-level failure."""
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate not trusted (CERTIFICATE_VERIFY_FAILED)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return f"{type(exc).__name__}: {text[:200]}"
