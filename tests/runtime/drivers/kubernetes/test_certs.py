"""cert check's parsing: PEM files and the client certificates of kubeconfigs."""

from __future__ import annotations

import base64
from pathlib import Path

from kbuild.runtime.drivers.kubernetes.certs import local_certs, parse_listing
from kbuild.runtime.drivers.kubernetes.pki import generate_ca, issue_server_cert


def test_listing_files_and_kubeconfigs() -> None:
    ca = generate_ca("kubernetes", days=365)
    server = issue_server_cert(ca, "kube-apiserver", days=30)
    conf_line = "    client-certificate-data: " + base64.b64encode(server.cert_pem).decode()
    text = (
        f"==> /etc/kubernetes/pki/ca.crt\n{ca.cert_pem.decode()}"
        f"==> /etc/kubernetes/pki/apiserver.crt\n{server.cert_pem.decode()}"
        "==> /etc/kubernetes/pki/broken.crt\nnot a certificate\n"
        f"==> /etc/kubernetes/admin.conf\n{conf_line}\n"
        "==> /etc/kubernetes/kubelet.conf\n    client-certificate-data: %%%\n"
    )
    found = parse_listing("10.0.0.2", text)
    assert [(c.host, c.path, c.subject) for c in found] == [
        ("10.0.0.2", "/etc/kubernetes/pki/ca.crt", "CN=kubernetes,O=kbuild"),
        ("10.0.0.2", "/etc/kubernetes/pki/apiserver.crt", "CN=kube-apiserver"),
        ("10.0.0.2", "/etc/kubernetes/admin.conf", "CN=kube-apiserver"),
    ]
    assert [c.days_left for c in found] == [364, 29, 29]
    assert found[1].issuer == "CN=kubernetes,O=kbuild"
    assert found[2].to_json()["daysLeft"] == 29


def test_local_certificates(tmp_path: Path) -> None:
    ca = generate_ca("kbuild demo CA")
    ca.write(tmp_path / "pki", "ca")
    (tmp_path / "pki" / "junk.crt").write_text("junk")
    (found,) = local_certs(tmp_path)
    assert (found.host, Path(found.path).name, found.subject) == (
        "local", "ca.crt", "CN=kbuild demo CA,O=kbuild")
