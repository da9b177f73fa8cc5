"""``kbuild login``/``logout``: check credentials against the registry, then store them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from kbuild.errors import AuthError, UsageError

from . import credentials as creds_mod
from .auth import basic_header
from .client import ClientOptions, RegistryClient
from .credentials import Credentials

_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io",
                "https://index.docker.io/v1/", "https://index.docker.io/v1"}


def normalize_registry(text: str) -> tuple[str, str]:
    """``(registry, api_host)`` of a login target (``docker.io`` → ``registry-1.docker.io``)."""
    text = text.strip()
    if text in _HUB_ALIASES:
        return "docker.io", "registry-1.docker.io"
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.split("/", 1)[0]
    if not text or any(c.isspace() for c in text):
        raise UsageError(f"invalid registry {text!r}", hint="use HOST[:PORT], e.g. "
                                                            "harbor.example.com")
    return text, text


def login(registry: str, username: str, password: str, *,
          options: ClientOptions | None = None) -> Path | str:
    """Verify ``username``/``password`` with the registry and store them.

    When the registry's token server hands out a refresh token, that
    identity token is stored instead of the password (as Docker does).
    Returns the auth file (or the credential helper) that holds them.
    """
    if not username or not password:
        raise UsageError("login needs a username and a password")
    reg, api_host = normalize_registry(registry)
    creds = Credentials(username=username, password=password)
    options = replace(options or ClientOptions(), credentials=creds)
    with RegistryClient(reg, options, api_host=api_host) as client:
        client.ping()
        challenge = client.auth.challenge
        if challenge is not None and challenge.scheme == "bearer":
            realm = challenge.params.get("realm", "")
            client.auth.fetch_token(realm, challenge.params.get("service", ""), [],
                                    offline=True)
            if client.auth.refresh_token:
                creds = Credentials(username=username,
                                    identity_token=client.auth.refresh_token)
        elif challenge is not None and challenge.scheme == "basic":
            resp = client.send_retrying("GET", client.url("/v2/"), what=f"{reg}: login",
                                         headers={"Authorization": basic_header(creds)})
            resp.close()
            if resp.status_code == 401:
                raise AuthError(f"{reg}: wrong username or password",
                                hint="check both; nothing was stored")
            if resp.status_code >= 400:
                raise AuthError(f"{reg}: login refused (HTTP {resp.status_code})")
    return creds_mod.store(reg, creds)


def logout(registry: str) -> bool:
    """Forget the stored credentials of ``registry``; False when there were none."""
    reg, _ = normalize_registry(registry)
    return creds_mod.erase(reg)
