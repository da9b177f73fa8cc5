"""Registry credentials, stored the way Docker and podman store them.

The auth file is ``$REGISTRY_AUTH_FILE`` if set (podman's variable), else
``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``. Its
``auths`` map holds ``{"auth": base64(user:password)}`` or an
``identitytoken``; ``credHelpers`` (per registry) and ``credsStore`` (for all)
name ``docker-credential-<name>`` programs spoken to with the Docker
credential-helper protocol (``get``/``store``/``erase`` on stdin/stdout).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kbuild.errors import AuthError, RegistryError
from kbuild.fsutil import write_private

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Credentials:
    """A username with a password, or an identity (refresh) token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret=***)"

    @property
    def empty(self) -> bool:
        """True when there is nothing to authenticate with."""
        return not (self.username or self.password or self.identity_token)


def auth_file_path() -> Path:
    """The credentials file kbuild reads and ``kbuild login`` writes."""
    explicit = os.environ.get("REGISTRY_AUTH_FILE")
    if explicit:
        return Path(explicit)
    docker_config = os.environ.get("DOCKER_CONFIG")
    if docker_config:
        return Path(docker_config) / "config.json"
    return Path.home() / ".docker" / "config.json"


def config_key(registry: str) -> str:
    """The key of ``registry`` in ``auths`` (Docker's for Docker Hub)."""
    return DOCKER_HUB_KEY if registry in _DOCKER_HUB_NAMES else registry


def _candidate_keys(registry: str) -> list[str]:
    if registry in _DOCKER_HUB_NAMES:
        return [DOCKER_HUB_KEY, "docker.io", "index.docker.io", "registry-1.docker.io",
                "https://index.docker.io/v1", "https://registry-1.docker.io"]
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/",
            f"https://{registry}/v2/"]


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The parsed auth file, ``{}`` when it does not exist."""
    path = path or auth_file_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RegistryError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg})",
            hint="fix or remove the file, then run kbuild login again",
        ) from None
    if not isinstance(data, dict):
        raise RegistryError(f"{path}: expected a JSON object")
    return data


def _write_config(path: Path, data: dict[str, Any]) -> None:
    write_private(path, (json.dumps(data, indent="\t") + "\n").encode())


def _helper_for(config: dict[str, Any], registry: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    for key in _candidate_keys(registry):
        if key in helpers:
            return str(helpers[key])
    store = config.get("credsStore")
    return str(store) if store else None


def _run_helper(name: str, action: str, data: str) -> str:
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, action], input=data, capture_output=True, text=True,
            timeout=_HELPER_TIMEOUT, check=False,
        )
    except FileNotFoundError:
        raise RegistryError(
            f"credential helper {program} not found in PATH",
            hint=f"install it or remove it from {auth_file_path()}",
        ) from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper {program} {action} timed out") from None
    if proc.returncode != 0:
        text = (proc.stdout + proc.stderr).strip()
        if action == "get" and "credentials not found" in text.lower():
            return ""
        raise RegistryError(f"credential helper {program} {action} failed: {text[:200]}")
    return proc.stdout


def lookup(registry: str, *, path: Path | None = None) -> Credentials | None:
    """Credentials for ``registry`` (host[:port]) from helpers or the auth file."""
    config = load_config(path)
    helper = _helper_for(config, registry)
    if helper:
        server = config_key(registry)
        out = _run_helper(helper, "get", server)
        if out.strip():
            try:
                data = json.loads(out)
            except json.JSONDecodeError:
                raise RegistryError(
                    f"credential helper docker-credential-{helper} returned invalid JSON"
                ) from None
            user = str(data.get("Username", ""))
            secret = str(data.get("Secret", ""))
            if user == "<token>":
                return Credentials(identity_token=secret)
            return Credentials(username=user, password=secret)
    auths = config.get("auths") or {}
    for key in _candidate_keys(registry):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        user = str(entry.get("username", ""))
        password = str(entry.get("password", ""))
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"])).decode()
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"{auth_file_path()}: bad 'auth' value for {key}") from None
            user, _, password = decoded.partition(":")
        creds = Credentials(user, password, str(entry.get("identitytoken", "")))
        if not creds.empty:
            return creds
    return None


def store(registry: str, creds: Credentials, *, path: Path | None = None) -> Path | str:
    """Save ``creds`` for ``registry``; returns the file, or the helper's name."""
    path = path or auth_file_path()
    config = load_config(path)
    helper = _helper_for(config, registry)
    key = config_key(registry)
    if helper:
        user = "<token>" if creds.identity_token else creds.username
        secret = creds.identity_token or creds.password
        _run_helper(helper, "store", json.dumps({"ServerURL": key, "Username": user,
                                                 "Secret": secret}))
        return f"docker-credential-{helper}"
    auths = config.setdefault("auths", {})
    for old in _candidate_keys(registry):
        auths.pop(old, None)
    entry: dict[str, str] = {}
    if creds.identity_token:
        entry["auth"] = base64.b64encode(f"{creds.username}:".encode()).decode()
        entry["identitytoken"] = creds.identity_token
    else:
        entry["auth"] = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
    auths[key] = entry
    _write_config(path, config)
    return path


def erase(registry: str, *, path: Path | None = None) -> bool:
    """Forget the credentials of ``registry``; False when there were none."""
    path = path or auth_file_path()
    config = load_config(path)
    helper = _helper_for(config, registry)
    if helper:
        if _run_helper(helper, "get", config_key(registry)).strip() == "":
            return False
        _run_helper(helper, "erase", config_key(registry))
        return True
    auths = config.get("auths") or {}
    found = False
    for key in _candidate_keys(registry):
        if key in auths:
            del auths[key]
            found = True
    if found:
        _write_config(path, config)
    return found
