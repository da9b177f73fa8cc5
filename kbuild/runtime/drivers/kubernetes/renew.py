"""``kbuild cert renew`` and ``kbuild cert --alt-names``, master by master.

renew: ``kubeadm certs renew all`` on one master, its control plane's
containers stopped (the kubelet starts them again with the new files), its
API server waited for; then the next master. The admin kubeconfig here is
fetched again (kubeconfig phase).

alt-names (params ``alt_names``): the names are added to ``apiServer.certSANs``
of kubeadm's ClusterConfiguration (the ``kubeadm-config`` ConfigMap and the
recorded Clusterfile's ClusterConfiguration document); on each master in
turn the API server certificate is issued again from the cluster CA
(``kubeadm init phase certs apiserver``) and the API server restarted.
"""

from __future__ import annotations

import copy
import shlex
from typing import Any

import yaml

from kbuild.errors import ClusterError
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.drivers.kubernetes.etcd import PKI
from kbuild.runtime.drivers.kubernetes.kubectl import KUBECTL
from kbuild.runtime.drivers.kubernetes.restore import wait_for_api
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.runevents import HostStatus, emit

__all__ = ["ALT_NAMES", "RENEW", "AltNamesPhase", "RenewPhase", "with_sans"]

RENEW = "cert-renew"
ALT_NAMES = "cert-alt-names"
CONTROL_PLANE = "^(kube-apiserver|kube-controller-manager|kube-scheduler|etcd)$"
KUBEADM_API = "kubeadm.k8s.io/v1beta4"


def _restart(names: str) -> str:
    """Stop the named control-plane containers; the kubelet starts them again."""
    return f"crictl ps -q --name {shlex.quote(names)} | xargs -r crictl stop >/dev/null"


RESTART_CONTROL_PLANE = _restart(CONTROL_PLANE)
RESTART_APISERVER = _restart("^kube-apiserver$")


class _Rolling(Phase):
    """A phase on every master, one after the other."""

    recorded = False

    def applies_to(self, ctx: Context, host: Host) -> bool:
        """Masters only."""
        return host.is_master

    def batches(self, ctx: Context, hosts: list[Host]) -> list[list[Host]]:
        """One master at a time: the others keep serving."""
        return [[h] for h in hosts]


class RenewPhase(_Rolling):
    """Renew every kubeadm certificate of one master and restart its control plane."""

    title = RENEW

    def run(self, ctx: Context, host: Host) -> None:
        """kubeadm certs renew all; containers restarted; the API server waited for."""
        ctx.conn(host).run(
            f"export PATH={shlex.quote(ctx.paths.rootfs)}/bin:$PATH && "
            f"kubeadm certs renew all >/dev/null && {RESTART_CONTROL_PLANE}",
            timeout=300,
        )
        wait_for_api(ctx, host)
        emit(ctx.progress, HostStatus(host.ip, RENEW, "renewed"))


def with_sans(config: dict[str, Any], names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``config`` (a ClusterConfiguration) with ``names`` added to
    ``apiServer.certSANs``; also the names that were new."""
    out = copy.deepcopy(config)
    api = out.setdefault("apiServer", {})
    if not isinstance(api, dict):
        raise ClusterError("kubeadm's ClusterConfiguration has an apiServer that is not a map")
    sans = list(api.get("certSANs") or [])
    added = [n for n in names if n not in sans]
    api["certSANs"] = sans + added
    return out, added


def _record_in_clusterfile(ctx: Context, names: list[str]) -> None:
    """The recorded Clusterfile's ClusterConfiguration document gets the names."""
    for i, doc in enumerate(ctx.cf.others):
        if doc.get("kind") == "ClusterConfiguration":
            ctx.cf.others[i], _ = with_sans(doc, names)
            break
    else:
        doc = {"apiVersion": KUBEADM_API, "kind": "ClusterConfiguration"}
        ctx.cf.others.append(with_sans(doc, names)[0])
    ctx.sd.save_clusterfile(ctx.cf)


class AltNamesPhase(_Rolling):
    """Add names to the API server certificate on every master."""

    title = ALT_NAMES

    def begin(self, ctx: Context, hosts: list[Host]) -> None:
        """The names into kubeadm-config (once, on the lead master) and the Clusterfile."""
        raw = ctx.params.get("alt_names")
        names = [str(n) for n in raw] if isinstance(raw, list) else []
        if not names:
            raise ClusterError("no names to add (--alt-names a,b)")
        conn = ctx.conn(ctx.lead)
        text = conn.run(
            f"{KUBECTL} -n kube-system get configmap kubeadm-config "
            "-o jsonpath='{.data.ClusterConfiguration}'"
        ).stdout
        config, added = with_sans(yaml.safe_load(text) or {}, names)
        self.config = yaml.safe_dump(config, sort_keys=False)
        patch = yaml.safe_dump({"data": {"ClusterConfiguration": self.config}})
        conn.run(
            f"{KUBECTL} -n kube-system patch configmap kubeadm-config --type merge "
            "--patch-file /dev/stdin",
            stdin=patch.encode(),
        )
        _record_in_clusterfile(ctx, names)
        ctx.results["added"] = added

    def run(self, ctx: Context, host: Host) -> None:
        """Issue the certificate again (the old one kept aside until it worked)."""
        init = yaml.safe_dump({"apiVersion": KUBEADM_API, "kind": "InitConfiguration",
                               "localAPIEndpoint": {"advertiseAddress": host.ip}})  # fmt: skip
        script = f"""set -eu
export PATH={shlex.quote(ctx.paths.rootfs)}/bin:$PATH
umask 077
cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
cat >"$cfg"
mv -f {PKI}/apiserver.crt {PKI}/apiserver.crt.kbuild-old
mv -f {PKI}/apiserver.key {PKI}/apiserver.key.kbuild-old
if ! kubeadm init phase certs apiserver --config "$cfg" >&2; then
  mv -f {PKI}/apiserver.crt.kbuild-old {PKI}/apiserver.crt
  mv -f {PKI}/apiserver.key.kbuild-old {PKI}/apiserver.key
  exit 1
fi
rm -f {PKI}/apiserver.crt.kbuild-old {PKI}/apiserver.key.kbuild-old
{RESTART_APISERVER}
"""
        ctx.conn(host).run(script, stdin=(init + "---\n" + self.config).encode(), timeout=300)
        wait_for_api(ctx, host)
        emit(ctx.progress, HostStatus(host.ip, ALT_NAMES, "apiserver certificate issued"))
