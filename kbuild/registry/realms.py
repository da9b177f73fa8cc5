"""Which token servers may receive a registry's credentials.

A registry names its token server (the bearer challenge's ``realm``), and a
registry is not trusted: kbuild sends the user's password or identity token
to that realm only when

- the realm is the registry's own host (any port), or a host the user trusts
  for it: Docker Hub's ``auth.docker.io``, ``ClientOptions.token_hosts``, or
  ``$XDG_CONFIG_HOME/kbuild/registries.json``
  (``{"registry.example.com": {"tokenHosts": ["sso.example.com"]}}``);
- and the realm is https, or plain http on the registry's own host while the
  registry itself is spoken to over plain http (a loopback or ``--tls-verify=false``
  registry).

Otherwise the token is asked for anonymously, and a request that then lacks
permission fails with an ``AuthError`` that says why the credentials were kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from kbuild.errors import RegistryError

BUILTIN_TOKEN_HOSTS = {
    "docker.io": frozenset({"auth.docker.io"}),
    "registry-1.docker.io": frozenset({"auth.docker.io"}),
}


def registries_file() -> Path:
    """``$XDG_CONFIG_HOME/kbuild/registries.json`` (``~/.config/kbuild/registries.json``)."""
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return home / "kbuild" / "registries.json"


def configured_token_hosts(registry: str) -> set[str]:
    """Token hosts the user's registries.json trusts for ``registry``."""
    path = registries_file()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise RegistryError(f"{path}: not valid JSON") from None
    entry = data.get(registry) if isinstance(data, dict) else None
    if entry is None:
        return set()
    hosts = entry.get("tokenHosts") if isinstance(entry, dict) else None
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise RegistryError(f"{path}: {registry}: 'tokenHosts' must be a list of host names",
                            hint=f'e.g. {{"{registry}": {{"tokenHosts": ["auth.example.com"]}}}}')
    return {h.lower() for h in hosts}


def _hostname(host: str) -> str:
    """``name`` of ``name[:port]`` / ``[v6]:port``, lower-cased."""
    return (urlsplit(f"//{host}").hostname or host).lower()


def trusted_token_hosts(registry: str, api_host: str, extra: Iterable[str] = ()) -> set[str]:
    """Every host (or ``host:port``) trusted to receive ``registry``'s credentials."""
    hosts = {h.lower() for h in extra}
    for name in (registry, api_host):
        hosts |= BUILTIN_TOKEN_HOSTS.get(name, frozenset())
    return hosts | configured_token_hosts(registry)


def credentials_refusal(realm: str, api_host: str, registry_scheme: str | None,
                        trusted: set[str]) -> str | None:
    """Why the credentials must not go to ``realm``; None when they may."""
    parts = urlsplit(realm)
    host = (parts.hostname or "").lower()
    netloc = parts.netloc.rpartition("@")[2].lower()
    if parts.scheme not in ("http", "https") or not host:
        return f"the token realm {realm!r} is not an http(s) URL"
    same_host = host == _hostname(api_host)
    if not same_host and host not in trusted and netloc not in trusted:
        return (f"the token server {netloc} is not the registry's host and not one "
                f"{registries_file()} trusts for it")
    if parts.scheme == "http" and not (same_host and registry_scheme == "http"):
        return f"the token server {netloc} is plain http"
    return None
