"""The OCI distribution client for one registry host (httpx, thread-safe).

Every request has a timeout; transient failures (connection errors, 408,
429, 5xx) are retried with exponential backoff and jitter, honouring
``Retry-After``, bounded in attempts and total time. 401 triggers one round
of the auth flow; 401 after that, 403 and 404 are never retried.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

import httpx

from kbuild.errors import AuthError, PermissionDenied, RegistryError

from . import credentials as creds_mod
from .auth import Authenticator, repository_scope
from .credentials import Credentials
from .events import Progress, Retrying
from .realms import trusted_token_hosts
from .transport import (
    DEFAULT_TIMEOUT,
    RetryPolicy,
    describe_transport_error,
    is_loopback,
    is_retryable_status,
    make_http_client,
    parse_retry_after,
)

_MAX_MANIFEST = 4 << 20
Body = Callable[[], Iterator[bytes]]


@dataclass
class ClientOptions:
    """Settings of a :class:`RegistryClient` (the CLI flags map onto these)."""

    tls_verify: bool = True
    insecure: bool = False
    jobs: int = 4
    chunk_size: int = 32 << 20
    chunked_threshold: int = 256 << 20
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    credentials: Credentials | None = None
    token_hosts: tuple[str, ...] = ()
    """Token servers (``host`` or ``host:port``) trusted with the credentials besides the
    registry's own host and those of ``registries.json`` (see ``kbuild.registry.realms``)."""


class TransientError(RegistryError):
    """A failure worth another try (connection lost, 429, 5xx) of a request sent once."""


def _registry_message(resp: httpx.Response) -> str:
    """The first error of a distribution error body, or the HTTP status."""
    with contextlib.suppress(Exception):
        body = resp.json()
        errors = body.get("errors") or []
        if errors:
            e = errors[0]
            return f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
    return f"HTTP {resp.status_code}"


class RegistryClient:
    """Talks the distribution API with one registry (``host[:port]``)."""

    def __init__(self, registry: str, options: ClientOptions | None = None, *,
                 api_host: str | None = None, progress: Progress | None = None) -> None:
        self.registry = registry
        self.host = api_host or registry
        self.options = options or ClientOptions()
        self.progress = progress
        self.plain_http_allowed = self.options.insecure or is_loopback(self.host) or (
            not self.options.tls_verify)
        creds = self.options.credentials
        if creds is None:
            creds = creds_mod.lookup(registry)
        self.auth = Authenticator(
            registry, creds, tls_verify=self.options.tls_verify, api_host=self.host,
            token_hosts=trusted_token_hosts(registry, self.host, self.options.token_hosts))
        self.http = make_http_client(self.host, tls_verify=self.options.tls_verify,
                                     timeout=self.options.timeout, pool=self.options.jobs)
        self.base_url: str | None = None
        self.request_count = 0
        self.push_repositories: set[str] = set()
        self._ping_lock = threading.Lock()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close all connections."""
        self.http.close()
        self.auth.close()

    def emit(self, event: Any) -> None:
        """Send a progress event, if anyone listens."""
        if self.progress is not None:
            self.progress(event)

    # -- connection set-up -------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/``: pick https or (where allowed) http and learn the auth challenge."""
        with self._ping_lock:
            if self.base_url is not None:
                return
            schemes = ["https", "http"] if self.plain_http_allowed else ["https"]
            last: Exception | None = None
            for scheme in schemes:
                base = f"{scheme}://{self.host}"
                fallback = scheme == "https" and self.plain_http_allowed
                try:
                    resp = self.send_retrying("GET", base + "/v2/", what=f"{self.registry}: ping",
                                               retry=not fallback)
                except RegistryError as exc:
                    last = exc
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                        raise RegistryError(
                            f"{self.registry}: TLS certificate not trusted",
                            hint=f"put its CA in /etc/containers/certs.d/{self.host}/ca.crt "
                                 "or use --tls-verify=false",
                        ) from None
                    continue
                try:
                    if resp.status_code == 401:
                        self.auth.set_challenge(resp.headers.get("WWW-Authenticate", ""))
                    elif resp.status_code >= 400 and resp.status_code != 404:
                        raise RegistryError(
                            f"{self.registry}: /v2/ answered {_registry_message(resp)}")
                finally:
                    resp.close()
                self.base_url = base
                self.auth.registry_scheme = scheme
                return
            raise RegistryError(f"{self.registry}: cannot reach the registry: {last}",
                                hint="check the address, or --tls-verify=false for "
                                     "a plain-HTTP registry") from None

    def url(self, path: str) -> str:
        """Absolute URL of an API path (after :meth:`ping`)."""
        self.ping()
        assert self.base_url is not None
        return self.base_url + path

    def absolute(self, location: str) -> str:
        """Resolve a ``Location`` header against the registry URL."""
        assert self.base_url is not None
        return urljoin(self.base_url + "/", location)

    # -- requests ----------------------------------------------------------

    def sleep_before_retry(self, what: str, attempt: int, started: float, reason: str,
                           retry_after: float | None = None) -> bool:
        """Emit ``Retrying`` and sleep, or return False when the retry budget is spent."""
        policy = self.options.retry
        if attempt >= policy.attempts:
            return False
        delay = policy.delay(attempt, retry_after)
        if time.monotonic() + delay - started > policy.max_time:
            return False
        self.emit(Retrying(what, attempt, delay, reason))
        time.sleep(delay)
        return True

    def send_retrying(self, method: str, url: str, *, what: str,
                      headers: dict[str, str] | None = None, content: bytes | None = None,
                      body: Body | None = None, stream: bool = False,
                      retry: bool = True, follow: bool = False) -> httpx.Response:
        """Send with retries on transient failures; no auth handling."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            request = self.http.build_request(
                method, url, headers=headers,
                content=body() if body is not None else content)
            self.request_count += 1
            try:
                resp = self.http.send(request, stream=stream, follow_redirects=follow)
            except httpx.TransportError as exc:
                reason = describe_transport_error(exc)
                if "CERTIFICATE_VERIFY_FAILED" in reason:
                    raise RegistryError(f"{what}: {reason}") from None
                if not retry:
                    raise TransientError(f"{what}: {reason}") from None
                if self.sleep_before_retry(what, attempt, started, reason):
                    continue
                raise RegistryError(
                    f"{what}: {reason} (gave up after {attempt} attempts, "
                    f"{time.monotonic() - started:.1f} s)") from None
            if is_retryable_status(resp.status_code):
                reason = f"HTTP {resp.status_code}"
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
                if not retry:
                    raise TransientError(f"{what}: registry answered {reason}")
                if self.sleep_before_retry(what, attempt, started, reason, retry_after):
                    continue
                raise RegistryError(f"{what}: registry answered {reason} "
                                    f"(gave up after {attempt} attempts)")
            return resp

    def request(self, method: str, url: str, *, repository: str, actions: tuple[str, ...],
                what: str, headers: dict[str, str] | None = None, content: bytes | None = None,
                body: Body | None = None, stream: bool = False, retry: bool = True,
                extra_scopes: tuple[str, ...] = (), ok: tuple[int, ...] = (200,),
                allow: tuple[int, ...] = ()) -> httpx.Response:
        """Send an authenticated request; raise for statuses not in ``ok`` or ``allow``.

        ``allow`` statuses (e.g. 404 of a HEAD) are returned without raising.
        """
        self.ping()
        if repository in self.push_repositories:
            actions = ("pull", "push")
        scopes = [repository_scope(repository, actions), *extra_scopes]
        force = False
        for round_ in (1, 2):
            hdrs = dict(headers or {})
            auth = self.auth.header(scopes, force=force)
            if auth:
                hdrs["Authorization"] = auth
            resp = self.send_retrying(method, url, what=what, headers=hdrs, content=content,
                                       body=body, stream=stream, retry=retry,
                                       follow=method in ("GET", "HEAD"))
            if resp.status_code == 401 and round_ == 1:
                challenge_header = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                before = self.auth.challenge
                self.auth.set_challenge(challenge_header)
                if before is None and self.auth.challenge is None:
                    break
                force = True
                continue
            if resp.status_code in ok or resp.status_code in allow:
                return resp
            self._raise_for(resp, what, actions)
        self._raise_for(resp, what, actions)
        raise AssertionError("unreachable")

    def _raise_for(self, resp: httpx.Response, what: str, actions: tuple[str, ...]) -> None:
        with contextlib.suppress(Exception):
            resp.read()
        resp.close()
        status = resp.status_code
        message = _registry_message(resp)
        creds = self.auth.credentials
        if status in (401, 403) and self.auth.withheld:
            raise self.auth.withheld_error(what)
        if status == 401:
            if creds is None or creds.empty:
                raise AuthError(f"{what}: authentication required",
                                hint=f"run: kbuild login {self.registry}")
            ch = self.auth.challenge
            if ch is not None and ch.scheme == "bearer":
                raise PermissionDenied(
                    f"{what}: access denied ({','.join(actions)} not granted to this user)",
                    hint="ask the registry admin for that permission, or log in as "
                         f"another user: kbuild login {self.registry}")
            raise AuthError(f"{what}: wrong username or password",
                            hint=f"run: kbuild login {self.registry}")
        if status == 403:
            raise PermissionDenied(f"{what}: access denied ({message})")
        if status == 404:
            raise RegistryError(f"{what}: not found ({message})")
        raise RegistryError(f"{what}: registry answered {message}")

    # -- API operations ----------------------------------------------------

    def blob_exists(self, repository: str, digest: str) -> int | None:
        """The size of ``digest`` in ``repository``, or None when the registry lacks it."""
        resp = self.request("HEAD", self.url(f"/v2/{repository}/blobs/{digest}"),
                            repository=repository, actions=("pull",),
                            what=f"{self.registry}/{repository}: HEAD {digest[:19]}",
                            allow=(404,))
        resp.close()
        if resp.status_code == 404:
            return None
        return int(resp.headers.get("Content-Length", "-1"))

    def start_upload(self, repository: str, *, mount: str | None = None,
                     mount_from: str | None = None) -> tuple[str | None, bool]:
        """POST an upload session (or a mount); returns (location, mounted)."""
        query = ""
        extra: tuple[str, ...] = ()
        if mount and mount_from:
            query = "?" + urlencode({"mount": mount, "from": mount_from})
            extra = (repository_scope(mount_from, ("pull",)),)
        resp = self.request("POST", self.url(f"/v2/{repository}/blobs/uploads/{query}"),
                            repository=repository, actions=("pull", "push"),
                            what=f"{self.registry}/{repository}: start upload",
                            headers={"Content-Length": "0"}, extra_scopes=extra,
                            ok=(201, 202))
        resp.close()
        location = resp.headers.get("Location")
        if resp.status_code == 201:
            return location, True
        if not location:
            raise RegistryError(f"{self.registry}/{repository}: upload started without Location")
        return self.absolute(location), False

    def upload_status(self, repository: str, location: str) -> int | None:
        """Bytes the registry holds of an upload session (None: the session is gone)."""
        resp = self.request("GET", location, repository=repository, actions=("pull", "push"),
                            what=f"{self.registry}/{repository}: upload status",
                            ok=(204,), allow=(404, 400))
        resp.close()
        if resp.status_code != 204:
            return None
        rng = resp.headers.get("Range", "")
        if not rng:
            return 0
        try:
            return int(rng.rsplit("-", 1)[1]) + 1
        except (IndexError, ValueError):
            raise RegistryError(f"{self.registry}: bad upload Range header {rng!r}") from None

    def get_manifest(self, repository: str, reference: str,
                     accept: tuple[str, ...]) -> tuple[bytes, str, str | None]:
        """GET a manifest: (bytes, Content-Type, Docker-Content-Digest)."""
        resp = self.request("GET", self.url(f"/v2/{repository}/manifests/{reference}"),
                            repository=repository, actions=("pull",),
                            what=f"{self.registry}/{repository}:{reference}",
                            headers={"Accept": ", ".join(accept)}, stream=True)
        try:
            length = int(resp.headers.get("Content-Length", "0") or 0)
            if length > _MAX_MANIFEST:
                raise RegistryError(f"{self.registry}/{repository}:{reference}: manifest of "
                                    f"{length} bytes is larger than {_MAX_MANIFEST}")
            data = b""
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) > _MAX_MANIFEST:
                    raise RegistryError(f"{self.registry}/{repository}:{reference}: "
                                        "manifest too large")
        finally:
            resp.close()
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media_type, resp.headers.get("Docker-Content-Digest")

    def put_manifest(self, repository: str, reference: str, data: bytes,
                     media_type: str) -> str | None:
        """PUT a manifest with its exact Content-Type; returns Docker-Content-Digest."""
        resp = self.request("PUT", self.url(f"/v2/{repository}/manifests/{reference}"),
                            repository=repository, actions=("pull", "push"),
                            what=f"{self.registry}/{repository}:{reference}",
                            headers={"Content-Type": media_type}, content=data, ok=(201, 200))
        resp.close()
        return resp.headers.get("Docker-Content-Digest")
