"""Credentials go only to a trusted token server: the registry's own host (plain http
only when the registry itself is plain http), or an https host the user names.

Real registries with the real JWT token server; "another host" is the token
server reached as ``localhost`` while the registry is ``127.0.0.1``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.errors import AuthError
from kbuild.layerstore import Store
from kbuild.registry import ClientOptions, Credentials, login, pull_image, push_image
from tests.fixtures.registry import (
    PASSWORD,
    USER,
    RegistryServer,
    TokenServer,
    free_port,
    make_ca,
)

from .images import make_image

pytestmark = pytest.mark.integration
ALICE = ClientOptions(credentials=Credentials(USER, PASSWORD))


@pytest.fixture
def config_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty Docker and kbuild config dirs; returns the kbuild one."""
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "kbuild").mkdir(parents=True)
    return tmp_path / "xdg" / "kbuild"


def _registry(work: Path, ts: TokenServer, *, tls: bool = False) -> RegistryServer:
    work.mkdir(parents=True, exist_ok=True)
    reg = RegistryServer(work, free_port(), scheme="https" if tls else "http", auth="token",
                         token_server=ts)
    if tls:
        reg.ca = make_ca(work / "pki")
        (reg.certs_d / reg.host).mkdir(parents=True)
        (reg.certs_d / reg.host / "ca.crt").write_bytes(reg.ca.ca_cert.read_bytes())
    reg.start()
    return reg


@pytest.fixture
def tls_token_server(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Iterator[TokenServer]:
    """The token server over HTTPS, announced as https://localhost:PORT/token."""
    work = tmp_path_factory.mktemp("tls-token")
    ca = make_ca(work / "pki")
    ts = TokenServer(work, tls=ca)
    ts.realm = f"https://localhost:{ts.port}/token"
    certs_d = work / "certs.d" / f"localhost:{ts.port}"
    certs_d.mkdir(parents=True)
    (certs_d / "ca.crt").write_bytes(ca.ca_cert.read_bytes())
    monkeypatch.setenv("KBUILD_CERTS_D", str(work / "certs.d"))
    ts.start()
    try:
        yield ts
    finally:
        ts.stop()


def _push_refused(store: Store, ref: str, why: str) -> None:
    with pytest.raises(AuthError) as info:
        push_image(store, "app:1", ref, options=ALICE)
    text = str(info.value)
    assert "authentication required; the credentials were not sent" in text and why in text
    assert info.value.hint and "tokenHosts" in info.value.hint and PASSWORD not in text


def test_plain_http_realm_on_another_host_gets_no_credentials(
        token_server: TokenServer, tmp_path: Path, config_dirs: Path) -> None:
    token_server.realm = f"http://localhost:{token_server.port}/token"
    reg = _registry(tmp_path / "reg", token_server)
    try:
        store = Store(tmp_path / "s")
        make_image(store, "app:1", [{"f": b"x"}])
        _push_refused(store, f"{reg.host}/alice/app:1", "is not the registry's host")
        # naming it does not help: a plain-http token server elsewhere never gets them
        (config_dirs / "registries.json").write_text(
            json.dumps({reg.host: {"tokenHosts": ["localhost"]}}))
        _push_refused(store, f"{reg.host}/alice/app:2", "is plain http")
        with pytest.raises(AuthError, match="not sending credentials"):
            login(reg.host, USER, PASSWORD)
        assert not (tmp_path / "docker" / "config.json").exists()
        assert token_server.requests and all(r.user is None for r in token_server.requests)
    finally:
        reg.stop()


def test_https_realm_on_another_host_only_when_the_user_names_it(
        tls_token_server: TokenServer, tmp_path: Path, config_dirs: Path) -> None:
    reg = _registry(tmp_path / "reg", tls_token_server)
    try:
        store = Store(tmp_path / "s")
        desc = make_image(store, "app:1", [{"f": b"y"}])
        _push_refused(store, f"{reg.host}/alice/app:1", "is not the registry's host")
        assert all(r.user is None for r in tls_token_server.requests)
        (config_dirs / "registries.json").write_text(
            json.dumps({reg.host: {"tokenHosts": [f"localhost:{tls_token_server.port}"]}}))
        tls_token_server.requests.clear()
        push_image(store, "app:1", f"{reg.host}/public/app:1", options=ALICE)
        assert {r.user for r in tls_token_server.requests} == {USER}
        login(reg.host, USER, PASSWORD)
        (config_dirs / "registries.json").unlink()
        # without the trust again, the stored credentials stay home; anonymous pulls work
        tls_token_server.requests.clear()
        got = pull_image(Store(tmp_path / "p"), f"{reg.host}/public/app:1")
        assert got.digest == desc.digest
        assert tls_token_server.requests and all(r.user is None and r.grant == "anonymous"
                                                 for r in tls_token_server.requests)
        with pytest.raises(AuthError, match="the credentials were not sent"):
            push_image(store, "app:1", f"{reg.host}/alice/app:3")
    finally:
        reg.stop()


def test_https_registry_with_a_plain_http_realm_on_its_own_host(
        token_server: TokenServer, tmp_path: Path, config_dirs: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    reg = _registry(tmp_path / "reg", token_server, tls=True)
    monkeypatch.setenv("KBUILD_CERTS_D", str(reg.certs_d))
    try:
        store = Store(tmp_path / "s")
        make_image(store, "app:1", [{"f": b"z"}])
        _push_refused(store, f"{reg.host}/alice/app:1", "is plain http")
        assert token_server.requests and all(r.user is None for r in token_server.requests)
    finally:
        reg.stop()


@pytest.mark.parametrize(("realm", "api_host", "scheme", "trusted", "refused"), [
    ("https://auth.docker.io/token", "registry-1.docker.io", "https", {"auth.docker.io"}, ""),
    ("https://harbor.example.com/service/token", "harbor.example.com", "https", set(), ""),
    ("https://harbor.example.com:8443/t", "harbor.example.com", "https", set(), ""),
    ("http://127.0.0.1:5001/token", "127.0.0.1:5000", "http", set(), ""),
    ("http://127.0.0.1:5001/token", "127.0.0.1:5000", "https", set(), "plain http"),
    ("http://harbor.example.com/t", "harbor.example.com", "https", set(), "plain http"),
    ("https://evil.example.net/t", "harbor.example.com", "https", set(), "not the registry"),
    ("https://harbor.example.com.evil.net/t", "harbor.example.com", "https", set(),
     "not the registry"),
    ("https://harbor.example.com@evil.net/t", "harbor.example.com", "https", set(),
     "not the registry"),
    ("https://sso.example.com/t", "harbor.example.com", "https", {"sso.example.com"}, ""),
    ("https://sso.example.com:9/t", "harbor.example.com", "https", {"sso.example.com:9"}, ""),
    ("https://sso.example.com:10/t", "harbor.example.com", "https", {"sso.example.com:9"},
     "not the registry"),
    ("http://sso.example.com/t", "harbor.example.com", "http", {"sso.example.com"},
     "plain http"),
    ("ftp://harbor.example.com/t", "harbor.example.com", "https", set(), "not an http(s) URL"),
    ("https://[::1]:5001/t", "[::1]:5000", "https", set(), ""),
])
def test_credentials_refusal_rules(realm: str, api_host: str, scheme: str, trusted: set[str],
                                   refused: str) -> None:
    from kbuild.registry.realms import credentials_refusal

    why = credentials_refusal(realm, api_host, scheme, trusted)
    assert (why is None) if not refused else (why is not None and refused in why)


def test_trusted_hosts_come_from_docker_hub_options_and_registries_json(
        config_dirs: Path) -> None:
    from kbuild.errors import RegistryError
    from kbuild.registry.realms import trusted_token_hosts

    assert trusted_token_hosts("docker.io", "registry-1.docker.io") == {"auth.docker.io"}
    (config_dirs / "registries.json").write_text(
        json.dumps({"reg.example.com": {"tokenHosts": ["SSO.example.com"]}}))
    assert trusted_token_hosts("reg.example.com", "reg.example.com", ["x:1"]) == {
        "sso.example.com", "x:1"}
    (config_dirs / "registries.json").write_text(json.dumps({"reg.example.com": {
        "tokenHosts": "sso.example.com"}}))
    with pytest.raises(RegistryError, match="'tokenHosts' must be a list of host names"):
        trusted_token_hosts("reg.example.com", "reg.example.com")
