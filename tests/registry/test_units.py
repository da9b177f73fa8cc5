"""Fast tests of the client's parts: challenges, token cache, retries, credentials, TLS dirs."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from kbuild.errors import AuthError, PermissionDenied, RegistryError, UsageError
from kbuild.layerstore import Platform, Reference
from kbuild.registry import (
    ClientOptions,
    Credentials,
    RegistryClient,
    Retrying,
    RetryPolicy,
    TokenCache,
    parse_www_authenticate,
)
from kbuild.registry import credentials as creds_mod
from kbuild.registry.transfer import select_manifest
from kbuild.registry.transport import host_cert_dirs, is_loopback, parse_retry_after


def test_parse_bearer_challenge_with_escapes_and_several_challenges() -> None:
    [ch] = parse_www_authenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/nginx:pull,push",error="insufficient_scope"')
    assert ch.scheme == "bearer"
    assert ch.params["realm"] == "https://auth.docker.io/token"
    assert ch.scopes == ["repository:library/nginx:pull,push"]
    assert ch.params["error"] == "insufficient_scope"
    two = parse_www_authenticate('Basic realm="a \\"q\\" b", Bearer realm=x , service=y')
    assert [c.scheme for c in two] == ["basic", "bearer"]
    assert two[0].params["realm"] == 'a "q" b'
    assert two[1].params == {"realm": "x", "service": "y"}
    assert parse_www_authenticate("") == []


def test_token_cache_keys_and_expiry() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    key = TokenCache.key("r", "s", ["repository:b:pull", "repository:a:pull"])
    assert key == TokenCache.key("r", "s", ["repository:a:pull", "repository:b:pull"])
    assert key != TokenCache.key("r", "s", ["repository:a:pull"])
    cache.put(key, "tok", 300)
    assert cache.get(key) == "tok"
    now[0] += 289
    assert cache.get(key) == "tok"
    now[0] += 2  # within the 10 s safety margin of expires_in
    assert cache.get(key) is None


def _client(handler: httpx.MockTransport, **opts: object) -> RegistryClient:
    options = ClientOptions(retry=RetryPolicy(attempts=4, max_time=10, base=0.01, cap=0.05),
                            credentials=Credentials(), **opts)  # type: ignore[arg-type]
    client = RegistryClient("127.0.0.1:1", options)
    client.http.close()
    client.http = httpx.Client(transport=handler)
    client.base_url = "http://127.0.0.1:1"
    return client


def test_retry_after_on_429_and_503_is_honoured() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "1"}),
               httpx.Response(503), httpx.Response(200, headers={"Content-Length": "7"})]
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        return answers.pop(0)

    events: list[object] = []
    client = _client(httpx.MockTransport(handler))
    client.progress = events.append
    assert client.blob_exists("a/b", "sha256:" + "0" * 64) == 7
    assert len(seen) == 3
    assert seen[1] - seen[0] >= 0.95, "Retry-After: 1 was not honoured"
    retries = [e for e in events if isinstance(e, Retrying)]
    assert [r.reason for r in retries] == ["HTTP 429", "HTTP 503"]


@pytest.mark.parametrize("status,error", [(401, AuthError), (403, PermissionDenied),
                                          (404, RegistryError)])
def test_never_retries_401_403_404(status: int, error: type[Exception]) -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        return httpx.Response(status, json={"errors": [{"code": "X", "message": "no"}]})

    client = _client(httpx.MockTransport(handler))
    with pytest.raises(error):
        client.get_manifest("a/b", "latest", ("application/json",))
    # a 401 gets exactly one auth round (here: no challenge, so none)
    assert count[0] == 1


def test_retries_are_bounded_in_count() -> None:
    count = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        count[0] += 1
        return httpx.Response(502)

    client = _client(httpx.MockTransport(handler))
    started = time.monotonic()
    with pytest.raises(RegistryError, match="gave up after 4 attempts"):
        client.blob_exists("a/b", "sha256:" + "0" * 64)
    assert count[0] == 4 and time.monotonic() - started < 5


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    value = parse_retry_after(date)
    assert value is not None and 25 <= value <= 31


def test_docker_hub_names() -> None:
    ref = Reference.parse("nginx")
    assert (ref.registry, ref.repository, ref.api_host) == ("docker.io", "library/nginx",
                                                            "registry-1.docker.io")
    client = RegistryClient(ref.registry, ClientOptions(credentials=Credentials()),
                            api_host=ref.api_host)
    assert client.host == "registry-1.docker.io" and not client.plain_http_allowed
    client.close()
    assert creds_mod.config_key("docker.io") == "https://index.docker.io/v1/"


def test_credentials_file_lookup_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({
        "auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p:x").decode()},
                  "reg.example:5000": {"auth": base64.b64encode(b"me:").decode(),
                                       "identitytoken": "refresh"}},
        "other": {"kept": True}}))
    assert creds_mod.lookup("docker.io") == Credentials("u", "p:x")
    assert creds_mod.lookup("reg.example:5000") == Credentials("me", "", "refresh")
    assert creds_mod.lookup("unknown.example") is None
    assert "p:x" not in repr(creds_mod.lookup("docker.io"))
    creds_mod.store("docker.io", Credentials("new", "pw"))
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["other"] == {"kept": True}
    assert base64.b64decode(data["auths"]["https://index.docker.io/v1/"]["auth"]) == b"new:pw"
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(RegistryError, match=r"config.json:1: not valid JSON"):
        creds_mod.lookup("docker.io")


def test_certs_d_lookup_and_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "reg.example:5000").mkdir(parents=True)
    (tmp_path / "b" / "reg.example:5000").mkdir(parents=True)
    monkeypatch.setenv("KBUILD_CERTS_D", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert host_cert_dirs("reg.example:5000")[:2] == [tmp_path / "a" / "reg.example:5000",
                                                      tmp_path / "b" / "reg.example:5000"]
    assert host_cert_dirs("reg.example") == []
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:5")
    assert not is_loopback("10.0.0.1:5000") and not is_loopback("registry.example")


def test_platform_parse_and_select() -> None:
    index = {"manifests": [
        {"digest": "a", "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "b", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "c", "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "d", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]}
    assert select_manifest(index, Platform.parse("linux/arm64/v8"), "x")["digest"] == "b"
    assert select_manifest(index, Platform.parse("linux/arm/v7"), "x")["digest"] == "c"
    assert select_manifest(index, Platform.parse("linux/amd64"), "x")["digest"] == "a"
    with pytest.raises(RegistryError) as info:
        select_manifest(index, Platform.parse("linux/arm/v6"), "x")
    assert info.value.hint and "linux/arm/v7" in info.value.hint
    with pytest.raises(UsageError):
        Platform.parse("linux")
