"""Download of ``ADD``/``APP`` URLs: the builder's one small door to HTTP.

Kept to one function so the rest of the builder knows nothing of HTTP. The
file lands under a temporary name and is renamed only once complete (and,
with a checksum, verified).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from kbuild.errors import BuildError, DigestMismatch

CHUNK = 1 << 20
TIMEOUT = 60.0


def is_url(text: str) -> bool:
    """True for an ``http://`` or ``https://`` source."""
    return text.startswith(("http://", "https://"))


def url_basename(url: str) -> str:
    """The file name a URL's path ends with (``index.html`` when it ends in ``/``)."""
    path = urllib.parse.urlsplit(url).path
    name = posixpath.basename(path.rstrip("/")) if not path.endswith("/") else ""
    return urllib.parse.unquote(name) or "index.html"


def parse_checksum(checksum: str, where: str) -> str:
    """Validate ``sha256:<64 hex>`` and return it lower-cased."""
    algo, _, hexdigest = checksum.partition(":")
    hexdigest = hexdigest.lower()
    if algo != "sha256" or len(hexdigest) != 64 or set(hexdigest) - set("0123456789abcdef"):
        raise BuildError(
            f"{where}: unsupported --checksum {checksum!r} (want sha256:<64 hex digits>)")
    return "sha256:" + hexdigest


def fetch_url(
    url: str,
    dest: Path,
    *,
    checksum: str | None = None,
    where: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> str:
    """Download ``url`` to ``dest`` and return ``sha256:`` of its bytes.

    Raises ``BuildError`` naming ``where`` and the URL on an HTTP or network
    failure, and ``DigestMismatch`` when ``checksum`` is given and differs.
    """
    import urllib.error  # imported here: most builds never download
    import urllib.request

    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "kbuild"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                h.update(chunk)
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        raise BuildError(
            f"{where}: downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise BuildError(f"{where}: downloading {url} failed: {reason}") from exc
    digest = "sha256:" + h.hexdigest()
    if checksum is not None and digest != checksum:
        tmp.unlink(missing_ok=True)
        raise DigestMismatch(checksum, digest, what=f"{where}: {url}")
    os.replace(tmp, dest)
    return digest
