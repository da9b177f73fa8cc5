"""The Kubernetes driver's PKI: checked with openssl, Python's TLS, a TLS registry + skopeo."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.errors import ClusterError, UsageError
from kbuild.layerstore import Store, TarEntry, pack_layer
from kbuild.layerstore.registry_layout import write_registry_storage
from kbuild.runtime.drivers.kubernetes.pki import (
    KeyPair,
    generate_ca,
    issue_server_cert,
    load_pair,
    registry_cert,
    san_names,
)
from tests.fixtures.registry import GeneratedCA, RegistryServer, free_port

OPENSSL = shutil.which("openssl")
SKOPEO = shutil.which("skopeo")
DOMAIN = "sea.hub"


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return generate_ca()


def test_sans_and_modes(ca: KeyPair, tmp_path: Path) -> None:
    server = registry_cert(ca, DOMAIN, ["192.168.10.2", "192.168.10.3", "127.0.0.1"])
    dns, ips = san_names(server)
    assert dns == [DOMAIN, "localhost"]
    assert ips == ["127.0.0.1", "192.168.10.2", "192.168.10.3"]
    cert_path, key_path = server.write(tmp_path / "pki", "registry")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert load_pair(cert_path, key_path) == server
    assert "key=***" in repr(server) and "PRIVATE" not in repr(server)
    assert not list((tmp_path / "pki").glob(".*"))


def test_ip_given_as_name_becomes_ip_san(ca: KeyPair) -> None:
    pair = issue_server_cert(ca, "10.0.0.9", dns_names=["Reg.Example", "reg.example"])
    assert san_names(pair) == (["reg.example"], ["10.0.0.9"])
    with pytest.raises(UsageError, match="not an IP address"):
        issue_server_cert(ca, "x", ip_addresses=["not-an-ip"])


def test_mismatched_key_is_refused(ca: KeyPair, tmp_path: Path) -> None:
    a = registry_cert(ca, DOMAIN, [])
    b = registry_cert(ca, DOMAIN, [])
    cert, _ = a.write(tmp_path, "a")
    _, key = b.write(tmp_path, "b")
    with pytest.raises(ClusterError, match="is not the key of"):
        load_pair(cert, key)
    with pytest.raises(ClusterError, match="cannot read"):
        load_pair(tmp_path / "none.crt", key)


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_openssl_verifies_chain(tmp_path: Path, key_type: str) -> None:
    ca = generate_ca(key_type=key_type)  # type: ignore[arg-type]
    server = registry_cert(ca, DOMAIN, ["10.1.2.3"], key_type=key_type)  # type: ignore[arg-type]
    ca_crt, _ = ca.write(tmp_path, "ca")
    crt, key = server.write(tmp_path, "registry")
    out = _openssl("verify", "-CAfile", str(ca_crt), "-purpose", "sslserver", str(crt))
    assert out.returncode == 0 and out.stdout.strip().endswith(": OK"), out.stdout + out.stderr
    for host in (DOMAIN, "localhost"):
        assert _openssl("verify", "-CAfile", str(ca_crt), "-verify_hostname", host,
                        str(crt)).returncode == 0
    assert _openssl("verify", "-CAfile", str(ca_crt), "-verify_ip", "10.1.2.3",
                    str(crt)).returncode == 0
    wrong = _openssl("verify", "-CAfile", str(ca_crt), "-verify_hostname", "evil.example",
                     str(crt))
    assert wrong.returncode != 0
    # a certificate from another CA does not verify against this one
    other = registry_cert(generate_ca(), DOMAIN, [])
    other_crt, _ = other.write(tmp_path, "other")
    assert _openssl("verify", "-CAfile", str(ca_crt), str(other_crt)).returncode != 0
    # the key matches the certificate
    pub_from_key = _openssl("pkey", "-in", str(key), "-pubout").stdout
    pub_from_crt = _openssl("x509", "-in", str(crt), "-noout", "-pubkey").stdout
    assert pub_from_key and pub_from_key == pub_from_crt


# --------------------------------------------------------------------------- a TLS registry


@pytest.fixture
def tls_served(ca: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    work = tmp_path_factory.mktemp("pki-registry")
    server = registry_cert(ca, DOMAIN, [])
    ca_crt, _ = ca.write(work / "pki", "ca")
    crt, key = server.write(work / "pki", "registry")
    reg = RegistryServer(work, free_port(), scheme="https")
    reg.ca = GeneratedCA(ca_crt, crt, key)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.mark.integration
@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_registry_serves_tls_with_generated_cert(
    ca: KeyPair, tls_served: RegistryServer, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store")
    layer = pack_layer(store, [TarEntry("hello", "file", data=b"hello over TLS")])
    desc = store.write_image({"architecture": "amd64", "os": "linux"}, [layer])
    write_registry_storage(store, [("registry.k8s.io/pause:3.10", desc)], tls_served.storage)
    tls_served.start()
    ref = f"docker://{tls_served.host}/pause:3.10"

    # no CA: refused; with a cert dir holding the generated CA: verified and pulled
    refused = subprocess.run([SKOPEO or "skopeo", "inspect", ref], capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode != 0
    assert "certificate" in refused.stderr
    certs = tmp_path / "certs"
    ca.write(certs, "ca")
    (certs / "ca.key").unlink()  # only the CA certificate travels to clients
    info = subprocess.run([SKOPEO or "skopeo", "inspect", "--cert-dir", str(certs), ref],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["Digest"] == desc.digest
    out = tmp_path / "pulled"
    copy = subprocess.run(
        [SKOPEO or "skopeo", "copy", "--preserve-digests", "--src-cert-dir", str(certs), ref,
         f"oci:{out}:pause"], capture_output=True, text=True, timeout=60)
    assert copy.returncode == 0, copy.stderr
    assert (out / "blobs/sha256" / layer.digest.split(":")[1]).read_bytes() == store.read_bytes(
        layer.digest)

    # the registry domain is in the certificate: TLS to 127.0.0.1 named sea.hub verifies
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    with socket.create_connection(("127.0.0.1", tls_served.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection(("127.0.0.1", tls_served.port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="other.example")
