"""The cluster's own small PKI: a CA and the embedded registry's server certificate.

kbuild generates, once per cluster, a CA (kept in the cluster state on the
client) and a server certificate for the embedded registry signed by it,
with the registry domain, ``localhost`` and the registry hosts' IPs as
subject alternative names. containerd on every host trusts the CA through
``certs.d/<host>/hosts.toml`` (``ca = …``), so the registry is served over
TLS with no ``insecure`` anywhere.

Keys are ECDSA P-256 by default (``key_type="rsa"`` for RSA 2048), PEM,
unencrypted; :meth:`KeyPair.write` writes them with mode 0600, atomically.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kbuild.errors import ClusterError, UsageError
from kbuild.fsutil import atomic_write
from kbuild.runtime.clusterfile import Cluster

KeyType = Literal["ecdsa", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS = 3650
"""Validity of a generated CA (ten years, like kubeadm's CA)."""

SERVER_DAYS = 3650
"""Validity of a generated registry certificate."""

_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)

    def private_key(self) -> PrivateKey:
        """The parsed private key."""
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise ClusterError("unsupported private key type (want ECDSA or RSA)")
        return key

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.crt`` (0644) and ``<name>.key`` (0600) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert = directory / f"{name}.crt"
        key = directory / f"{name}.key"
        atomic_write(key, self.key_pem, mode=0o600)
        atomic_write(cert, self.cert_pem, mode=0o644)
        return cert, key

    def __repr__(self) -> str:
        return f"KeyPair(subject={self.certificate.subject.rfc4514_string()!r}, key=***)"


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise UsageError(f"unknown key type {key_type!r} (ecdsa or rsa)")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def generate_ca(
    common_name: str = "kbuild cluster CA",
    *,
    organization: str | None = "kbuild",
    days: int = CA_DAYS,
    key_type: KeyType = "ecdsa",
) -> KeyPair:
    """A new self-signed CA certificate and key."""
    key = _new_key(key_type)
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name, organization)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _san_entries(dns_names: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    dns: list[str] = []
    ip_texts = list(ips)
    for name in dns_names:
        text = name.strip().lower()
        if not text:
            continue
        try:
            ipaddress.ip_address(text)
        except ValueError:
            if text not in dns:
                dns.append(text)
        else:
            ip_texts.append(text)
    entries: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    seen: set[str] = set()
    for ip_text in ip_texts:
        try:
            ip = ipaddress.ip_address(ip_text.strip())
        except ValueError:
            raise UsageError(f"certificate SAN: {ip_text!r} is not an IP address") from None
        if str(ip) not in seen:
            seen.add(str(ip))
            entries.append(x509.IPAddress(ip))
    return entries


def issue_server_cert(
    ca: KeyPair,
    common_name: str,
    *,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    days: int = SERVER_DAYS,
    key_type: KeyType = "ecdsa",
) -> KeyPair:
    """A TLS server certificate signed by ``ca``.

    ``common_name`` is also a DNS SAN (clients check SANs only). Entries of
    ``dns_names`` that are IP addresses become IP SANs.
    """
    sans = _san_entries([common_name, *dns_names], ip_addresses)
    if not sans:
        raise UsageError("a server certificate needs at least one name or IP")
    ca_cert = ca.certificate
    ca_key = ca.private_key()
    key = _new_key(key_type)
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def registry_cert(
    ca: KeyPair, domain: str, ips: Iterable[str], *, key_type: KeyType = "ecdsa"
) -> KeyPair:
    """The embedded registry's certificate.

    SANs: ``domain``, ``localhost``, 127.0.0.1 and ``ips`` (the registry hosts).
    """
    return issue_server_cert(
        ca, domain, dns_names=["localhost"], ip_addresses=["127.0.0.1", *ips],
        key_type=key_type,
    )


def load_pair(cert_path: Path, key_path: Path) -> KeyPair:
    """Read a certificate and key written by :meth:`KeyPair.write` (checked to match)."""
    try:
        pair = KeyPair(cert_path.read_bytes(), key_path.read_bytes())
        cert = pair.certificate
        key = pair.private_key()
    except OSError as exc:
        raise ClusterError(f"{exc.filename}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ClusterError(
            f"{cert_path} / {key_path}: not a PEM certificate and key: {exc}"
        ) from None
    pem, spki = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(pem, spki) != key.public_key().public_bytes(pem, spki):
        raise ClusterError(f"{key_path} is not the key of {cert_path}")
    return pair


def san_names(pair: KeyPair) -> tuple[list[str], list[str]]:
    """The DNS and IP subject alternative names of a certificate."""
    try:
        ext = pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return [], []
    dns = [str(v) for v in ext.value.get_values_for_type(x509.DNSName)]
    ips = [str(v) for v in ext.value.get_values_for_type(x509.IPAddress)]
    return dns, ips


@dataclass(frozen=True)
class ClusterPki:
    """The cluster's CA (``<state>/pki/ca.{crt,key}``) and the embedded
    registry's certificates, one per host (every host serves the images of
    its own rootfs)."""

    ca: KeyPair
    directory: Path

    def registry(self, domain: str, ip: str) -> KeyPair:
        """The registry certificate of the host ``ip``: SANs the registry
        domain, 127.0.0.1 and ``ip`` (``pki/registry-<ip>.{crt,key}``, issued
        again when its names differ)."""
        name = "registry-" + ip.replace(":", "_").replace("%", "_")
        crt, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        if crt.exists() and key.exists():
            pair = load_pair(crt, key)
            names, ips = san_names(pair)
            if domain in names and {ip, "127.0.0.1"} <= set(ips):
                return pair
        pair = registry_cert(self.ca, domain, [ip])
        pair.write(self.directory, name)
        return pair


def cluster_pki(state_dir: Path, cluster: Cluster) -> ClusterPki:
    """Load or create the cluster CA ``<state_dir>/pki/ca.{crt,key}`` (made once
    per cluster; the directory 0700, keys 0600)."""
    directory = state_dir / "pki"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    ca_crt, ca_key = directory / "ca.crt", directory / "ca.key"
    if ca_crt.exists() and ca_key.exists():
        ca = load_pair(ca_crt, ca_key)
    else:
        ca = generate_ca(f"kbuild {cluster.name} CA")
        ca.write(directory, "ca")
    return ClusterPki(ca, directory)
