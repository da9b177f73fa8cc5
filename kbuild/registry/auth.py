"""Registry authentication: ``WWW-Authenticate`` parsing, Basic, and the bearer-token flow.

Tokens are cached by (realm, service, scopes) until shortly before their
``expires_in`` runs out. Identity tokens (``refresh_token`` of an OAuth2
token server, as ACR and Docker Hub hand them out at login) are exchanged
with a ``POST`` of ``grant_type=refresh_token``; a username and password use
Docker's ``GET`` with Basic auth; no credentials ask for an anonymous token.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from kbuild.errors import AuthError, RegistryError

from .credentials import Credentials
from .realms import credentials_refusal, registries_file
from .transport import describe_transport_error, make_http_client

CLIENT_ID = "kbuild"
TRUST_HINT = ('if you trust that token server, name it in {path}: '
              '{{"{registry}": {{"tokenHosts": ["{host}"]}}}} (it must be https)')
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DEFAULT_EXPIRES = 60


@dataclass
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: scheme and parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def scopes(self) -> list[str]:
        """The ``scope`` parameter split on spaces."""
        return [s for s in self.params.get("scope", "").split(" ") if s]


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse ``Bearer realm="…",service="…"`` (several challenges allowed)."""
    out: list[Challenge] = []
    pos, n = 0, len(header)
    while pos < n:
        while pos < n and header[pos] in " \t,":
            pos += 1
        m = _TOKEN.match(header, pos)
        if not m:
            break
        word = m.group(0)
        pos = m.end()
        while pos < n and header[pos] in " \t":
            pos += 1
        if pos < n and header[pos] == "=" and out:
            pos += 1
            while pos < n and header[pos] in " \t":
                pos += 1
            if pos < n and header[pos] == '"':
                pos += 1
                value = []
                while pos < n and header[pos] != '"':
                    if header[pos] == "\\" and pos + 1 < n:
                        pos += 1
                    value.append(header[pos])
                    pos += 1
                pos += 1
                out[-1].params[word.lower()] = "".join(value)
            else:
                m2 = _TOKEN.match(header, pos)
                value_s = m2.group(0) if m2 else ""
                pos = m2.end() if m2 else pos + 1
                out[-1].params[word.lower()] = value_s
        else:
            out.append(Challenge(word.lower()))
    return out


def basic_header(creds: Credentials) -> str:
    """``Basic base64(user:password)``."""
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def repository_scope(repository: str, actions: Iterable[str]) -> str:
    """``repository:NAME:pull,push``."""
    return f"repository:{repository}:{','.join(actions)}"


@dataclass
class _Token:
    value: str
    expires: float
    refresh_token: str | None = None


class TokenCache:
    """Bearer tokens keyed by (realm, service, sorted scopes), thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str, tuple[str, ...]], threading.Lock] = {}

    @staticmethod
    def key(realm: str, service: str, scopes: Iterable[str]) -> tuple[str, str, tuple[str, ...]]:
        """The cache key of a token request."""
        return (realm, service, tuple(sorted(set(scopes))))

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> str | None:
        """A cached token that is still valid, else None."""
        with self._lock:
            tok = self._tokens.get(key)
            if tok is None or tok.expires <= self._clock():
                return None
            return tok.value

    def put(self, key: tuple[str, str, tuple[str, ...]], token: str, expires_in: int) -> None:
        """Remember ``token`` for ``expires_in`` seconds, less a safety margin."""
        margin = min(10.0, expires_in / 5)
        with self._lock:
            self._tokens[key] = _Token(token, self._clock() + expires_in - margin)

    def drop(self, key: tuple[str, str, tuple[str, ...]]) -> None:
        """Forget a token (the registry refused it)."""
        with self._lock:
            self._tokens.pop(key, None)

    def key_lock(self, key: tuple[str, str, tuple[str, ...]]) -> threading.Lock:
        """A lock per key, so parallel workers fetch one token, not one each."""
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())


class Authenticator:
    """Turns challenges and scopes into ``Authorization`` headers for one registry."""

    def __init__(self, registry: str, credentials: Credentials | None, *,
                 tls_verify: bool = True, cache: TokenCache | None = None,
                 api_host: str | None = None, token_hosts: set[str] | None = None) -> None:
        self.registry = registry
        self.api_host = api_host or registry
        self.registry_scheme: str | None = None  # https or http, once the client pinged
        self.token_hosts = token_hosts if token_hosts is not None else set()
        self.withheld: str | None = None  # why the credentials were not sent to the realm
        self.credentials = credentials
        self.tls_verify = tls_verify
        self.cache = cache or TokenCache()
        self.challenge: Challenge | None = None
        self.refresh_token: str | None = None
        self.token_requests = 0
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the HTTP clients used for token servers."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def set_challenge(self, header: str) -> Challenge | None:
        """Record the registry's challenge from a ``WWW-Authenticate`` header."""
        challenges = parse_www_authenticate(header)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None)
        if chosen is not None:
            self.challenge = chosen
        return chosen

    def header(self, scopes: list[str], *, force: bool = False) -> str | None:
        """The ``Authorization`` value for a request needing ``scopes`` (None: send none)."""
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            if self.credentials is None or self.credentials.empty:
                return None
            if self.credentials.identity_token and not self.credentials.password:
                return None
            return basic_header(self.credentials)
        if ch.scheme != "bearer":
            return None
        realm = ch.params.get("realm", "")
        service = ch.params.get("service", "")
        if not realm:
            raise RegistryError(f"{self.registry}: bearer challenge without a realm")
        key = TokenCache.key(realm, service, scopes)
        with self.cache.key_lock(key):
            if not force:
                cached = self.cache.get(key)
                if cached is not None:
                    return "Bearer " + cached
            token, expires_in = self.fetch_token(realm, service, list(key[2]))
            self.cache.put(key, token, expires_in)
        return "Bearer " + token

    def withheld_error(self, what: str) -> AuthError:
        """The error for a request refused because the credentials were kept back."""
        return AuthError(f"{what}: authentication required; the credentials were not sent: "
                         f"{self.withheld}",
                         hint=TRUST_HINT.format(registry=self.registry,
                                                host=self._realm_host(), path=registries_file()))

    def _realm_host(self) -> str:
        realm = self.challenge.params.get("realm", "") if self.challenge else ""
        return urlsplit(realm).netloc or "TOKEN-HOST"

    def _client(self, realm: str) -> httpx.Client:
        host = urlsplit(realm).netloc
        with self._lock:
            client = self._clients.get(host)
            if client is None:
                client = make_http_client(host, tls_verify=self.tls_verify, pool=2)
                self._clients[host] = client
            return client

    def _credentials_for(self, realm: str, *, required: bool) -> Credentials | None:
        """The credentials to send to ``realm``: None when there are none or it is not trusted.

        With ``required`` (login) an untrusted realm is an ``AuthError`` instead.
        """
        creds = self.credentials
        if creds is None or creds.empty:
            return None
        refusal = credentials_refusal(realm, self.api_host, self.registry_scheme,
                                      self.token_hosts)
        if refusal is None:
            return creds
        if required:
            raise AuthError(f"{self.registry}: not sending credentials: {refusal}",
                            hint=TRUST_HINT.format(registry=self.registry,
                                                   host=urlsplit(realm).netloc,
                                                   path=registries_file()))
        self.withheld = refusal
        return None

    def fetch_token(self, realm: str, service: str, scopes: list[str], *,
                    offline: bool = False) -> tuple[str, int]:
        """Ask the token server for a token; returns (token, expires_in).

        ``offline`` (login) asks for a refresh token, and refuses a realm the
        credentials may not go to instead of asking anonymously.
        """
        creds = self._credentials_for(realm, required=offline)
        client = self._client(realm)
        self.token_requests += 1
        try:
            if creds is not None and creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "service": service, "client_id": CLIENT_ID}
                if scopes:
                    form["scope"] = " ".join(scopes)
                resp = client.post(realm, data=form)
            else:
                params: list[tuple[str, str | int | float | bool | None]] = []
                if service:
                    params.append(("service", service))
                params += [("scope", s) for s in scopes]
                headers = {}
                if creds is not None and not creds.empty:
                    headers["Authorization"] = basic_header(creds)
                    if offline:
                        params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
                resp = client.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise RegistryError(
                f"{self.registry}: token server {urlsplit(realm).netloc} unreachable: "
                f"{describe_transport_error(exc)}") from None
        if resp.status_code in (401, 403):
            if creds is None and self.withheld:
                raise self.withheld_error(self.registry)
            if creds is None or creds.empty:
                raise AuthError(f"{self.registry}: the registry requires authentication",
                                hint=f"run: kbuild login {self.registry}")
            what = "identity token" if creds.identity_token else "username or password"
            raise AuthError(f"{self.registry}: wrong {what} (token server refused it)",
                            hint=f"run: kbuild login {self.registry}")
        if resp.status_code != 200:
            raise RegistryError(
                f"{self.registry}: token server answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            raise RegistryError(f"{self.registry}: token server sent no JSON") from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"{self.registry}: token server sent no token")
        if body.get("refresh_token"):
            self.refresh_token = str(body["refresh_token"])
        try:
            expires_in = int(body.get("expires_in") or _DEFAULT_EXPIRES)
        except (TypeError, ValueError):
            expires_in = _DEFAULT_EXPIRES
        return str(token), expires_in if expires_in > 0 else _DEFAULT_EXPIRES
