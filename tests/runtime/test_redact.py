"""Known secrets are masked in progress and in errors, whatever a host prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from kbuild.errors import HostError
from kbuild.runtime import titles
from kbuild.runtime.drivers.kubernetes import KubernetesDriver
from kbuild.runtime.drivers.kubernetes.kubeadm import document_secrets
from kbuild.runtime.phases.manager import Manager
from kbuild.runtime.phases.plugins import PluginPhase
from kbuild.runtime.redact import MASK, Redactor
from kbuild.runtime.runevents import HostOutput
from tests.runtime.phases.harness import scenario
from tests.runtime.recording import Facts

SSH_PW = "s3cret-ssh-pw"
CERT_KEY = "a" * 64
TOKEN = "abcdef.0123456789abcdef"
CF = f"""\
apiVersion: sealer.io/v2
kind: Cluster
metadata: {{name: demo}}
spec:
  image: demo:1
  ssh: {{passwd: {SSH_PW}}}
  hosts:
    - {{ips: [10.0.0.2], roles: [master]}}
---
kind: Plugin
metadata: {{name: chatty}}
spec: {{action: pre-install, data: "echo"}}
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
certificateKey: {CERT_KEY}
bootstrapTokens: [{{token: {TOKEN}}}]
"""


def test_redactor_masks_text_events_and_errors() -> None:
    r = Redactor(["hunter2-long", "ab"])  # too short to mask: "ab" stays
    assert r.text("pw hunter2-long ab") == f"pw {MASK} ab"
    event = r.event(HostOutput("h", "stdout", "echo hunter2-long"))
    assert isinstance(event, HostOutput) and event.line == f"echo {MASK}"
    err = r.error(HostError("h", "failed with hunter2-long", output_tail="x hunter2-long"))
    assert "hunter2-long" not in str(err) and isinstance(err, HostError)


def test_kubeadm_document_secrets() -> None:
    docs = [
        {"kind": "InitConfiguration", "certificateKey": CERT_KEY, "bootstrapTokens": [
            {"token": TOKEN}, "junk"]},
        {"kind": "JoinConfiguration", "discovery": {"bootstrapToken": {"token": "t1.xxxxxx"},
                                                    "tlsBootstrapToken": "t2.yyyyyy"},
         "controlPlane": {"certificateKey": "k" * 64}},
        {"kind": "ClusterConfiguration", "certificateKey": "not-here"},
    ]  # fmt: skip
    assert document_secrets(docs) == [CERT_KEY, TOKEN, "t1.xxxxxx", "t2.yyyyyy", "k" * 64]


def test_a_host_that_prints_secrets_shows_them_masked(tmp_path: Path) -> None:
    """A plugin echoing the SSH password and the kubeadm certificate key: the
    display and the error show neither."""
    noisy = f"password {SSH_PW} key {CERT_KEY} token {TOKEN}\n"
    facts = Facts.from_data({"*": [{"match": r"sh -s", "stdout": noisy, "exit": 1}]})
    sc = scenario(tmp_path, CF, facts, drivers=(KubernetesDriver,),
                  image_labels={"org.kbuild.kubernetes": "v1.37.2"})  # fmt: skip
    sc.ctx.targets = sc.ctx.cf.cluster.all_hosts()
    sc.ctx.load_image(None)
    with pytest.raises(HostError) as info:
        Manager([PluginPhase(titles.PRE_INSTALL)]).run(sc.ctx)
    shown = [e.line for e in sc.events if isinstance(e, HostOutput)]
    assert shown == [f"password {MASK} key {MASK} token {MASK}"]
    for secret in (SSH_PW, CERT_KEY, TOKEN):
        assert secret not in str(info.value)
