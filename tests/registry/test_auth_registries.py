"""Auth against real registries: TLS + htpasswd basic auth, and a bearer token server."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from kbuild.errors import AuthError, PermissionDenied, RegistryError
from kbuild.layerstore import Store
from kbuild.registry import (
    BlobDone,
    ClientOptions,
    Credentials,
    RegistryClient,
    login,
    logout,
    pull_image,
    push_image,
)
from tests.fixtures.registry import PASSWORD, USER, RegistryServer, TokenServer

from .images import make_image, random_bytes

pytestmark = pytest.mark.integration


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DOCKER_CONFIG for the test; returns its config.json path."""
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    return tmp_path / "docker" / "config.json"


def test_tls_basic_auth_login_push_pull(tls_registry: RegistryServer, tmp_path: Path,
                                        docker_config: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"f": random_bytes(100_000)}])
    ref = f"{tls_registry.host}/team/app:1"

    # without the CA the certificate is refused, with a hint
    with pytest.raises(RegistryError, match="TLS certificate not trusted") as info:
        push_image(store, "app:1", ref)
    assert info.value.hint and "certs.d" in info.value.hint

    monkeypatch.setenv("KBUILD_CERTS_D", str(tls_registry.certs_d))
    with pytest.raises(AuthError, match="authentication required"):
        push_image(store, "app:1", ref)
    with pytest.raises(AuthError, match="wrong username or password"):
        login(tls_registry.host, USER, "not-the-password")
    assert not docker_config.exists()

    where = login(tls_registry.host, USER, PASSWORD)
    assert where == docker_config
    assert stat.S_IMODE(os.stat(docker_config).st_mode) == 0o600
    saved = json.loads(docker_config.read_text())
    assert PASSWORD not in docker_config.read_text()  # base64 only, as Docker does
    assert tls_registry.host in saved["auths"]

    assert push_image(store, "app:1", ref).digest == desc.digest
    assert pull_image(Store(tmp_path / "p"), ref).digest == desc.digest

    assert logout(tls_registry.host) is True
    assert logout(tls_registry.host) is False
    with pytest.raises(AuthError):
        pull_image(Store(tmp_path / "q"), ref)


def test_tls_verify_false_skips_the_ca(tls_registry: RegistryServer, tmp_path: Path,
                                       docker_config: Path) -> None:
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"f": b"x"}])
    opts = ClientOptions(tls_verify=False, credentials=Credentials(USER, PASSWORD))
    got = push_image(store, "app:1", f"{tls_registry.host}/t/app:1", options=opts)
    assert got.digest == desc.digest


def test_token_auth_push_pull_mount_and_cache(token_registry: RegistryServer,
                                              token_server: TokenServer, tmp_path: Path,
                                              docker_config: Path) -> None:
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"a": random_bytes(200_000)}, {"b": b"b"}])
    with pytest.raises(AuthError, match="wrong username or password"):
        login(token_registry.host, USER, "bad")
    assert token_server.requests[-1].status == 401
    login(token_registry.host, USER, PASSWORD)
    entry = json.loads(docker_config.read_text())["auths"][token_registry.host]
    assert entry.get("identitytoken"), "the refresh token is stored as identitytoken"

    token_server.requests.clear()
    push_image(store, "app:1", f"{token_registry.host}/alice/app:1")
    # one token for the repository, fetched once for 3 blobs + manifest (cache), via
    # the refresh token (ACR-style POST form)
    assert [(r.method, r.grant, r.scopes) for r in token_server.requests] == [
        ("POST", "refresh_token", ["repository:alice/app:pull,push"])]

    token_server.requests.clear()
    events: list[object] = []
    push_image(store, "app:1", f"{token_registry.host}/alice/other:1", progress=events.append)
    assert {e.how for e in events if isinstance(e, BlobDone)} == {"mounted"}
    multi = [r.scopes for r in token_server.requests if len(r.scopes) == 2]
    assert sorted(multi[0]) == ["repository:alice/app:pull", "repository:alice/other:pull,push"]

    assert pull_image(Store(tmp_path / "p"), f"{token_registry.host}/alice/other:1").digest \
        == desc.digest


def test_token_auth_permission_and_anonymous(token_registry: RegistryServer,
                                             token_server: TokenServer, tmp_path: Path,
                                             docker_config: Path) -> None:
    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"a": b"public"}])
    creds = ClientOptions(credentials=Credentials(USER, PASSWORD))
    with pytest.raises(PermissionDenied, match="forbidden/app") as info:
        push_image(store, "app:1", f"{token_registry.host}/forbidden/app:1", options=creds)
    assert "push" in str(info.value) and PASSWORD not in str(info.value)

    push_image(store, "app:1", f"{token_registry.host}/public/app:1", options=creds)
    token_server.requests.clear()
    got = pull_image(Store(tmp_path / "anon"), f"{token_registry.host}/public/app:1")
    assert got.digest == desc.digest
    assert token_server.requests and all(r.user is None for r in token_server.requests)
    with pytest.raises(AuthError, match="authentication required"):
        push_image(store, "app:1", f"{token_registry.host}/public/app:2")


def test_token_expiry_is_honoured(token_registry: RegistryServer, token_server: TokenServer,
                                  tmp_path: Path, docker_config: Path) -> None:
    token_server.expires_in = 2
    opts = ClientOptions(credentials=Credentials(USER, PASSWORD))
    with RegistryClient(token_registry.host, opts) as client:
        client.blob_exists("alice/x", "sha256:" + "0" * 64)
        client.blob_exists("alice/x", "sha256:" + "1" * 64)
        assert client.auth.token_requests == 1
        time.sleep(2.1)
        client.blob_exists("alice/x", "sha256:" + "2" * 64)
        assert client.auth.token_requests == 2


@pytest.mark.parametrize("kind", ["credHelpers", "credsStore"])
def test_credential_helper(tls_registry: RegistryServer, tmp_path: Path, docker_config: Path,
                           monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A ``docker-credential-test`` helper stores, gets and erases secrets."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    vault = tmp_path / "vault.json"
    helper = bindir / "docker-credential-test"
    helper.write_text(f"""#!/usr/bin/env python3
import json, sys, pathlib
vault = pathlib.Path({str(vault)!r})
data = json.loads(vault.read_text()) if vault.exists() else {{}}
action = sys.argv[1]
if action == "store":
    req = json.load(sys.stdin); data[req["ServerURL"]] = [req["Username"], req["Secret"]]
    vault.write_text(json.dumps(data))
elif action == "get":
    url = sys.stdin.read().strip()
    if url not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": url, "Username": data[url][0], "Secret": data[url][1]}}))
elif action == "erase":
    data.pop(sys.stdin.read().strip(), None); vault.write_text(json.dumps(data))
""")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KBUILD_CERTS_D", str(tls_registry.certs_d))
    docker_config.parent.mkdir(parents=True)
    docker_config.write_text(json.dumps(
        {"credHelpers": {tls_registry.host: "test"}} if kind == "credHelpers"
        else {"credsStore": "test"}))

    where = login(tls_registry.host, USER, PASSWORD)
    assert where == "docker-credential-test"
    assert json.loads(vault.read_text())[tls_registry.host] == [USER, PASSWORD]
    assert "auths" not in json.loads(docker_config.read_text())

    store = Store(tmp_path / "s")
    desc = make_image(store, "app:1", [{"h": b"helper"}])
    assert push_image(store, "app:1", f"{tls_registry.host}/h/app:1").digest == desc.digest
    assert logout(tls_registry.host) is True
    assert json.loads(vault.read_text()) == {}
    with pytest.raises(AuthError):
        push_image(store, "app:1", f"{tls_registry.host}/h/app:2")


def test_registry_auth_file_wins(tls_registry: RegistryServer, tmp_path: Path,
                                 docker_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KBUILD_CERTS_D", str(tls_registry.certs_d))
    auth_file = tmp_path / "containers" / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    assert login(tls_registry.host, USER, PASSWORD) == auth_file
    assert not docker_config.exists()
    assert stat.S_IMODE(os.stat(auth_file).st_mode) == 0o600
