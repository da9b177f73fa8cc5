#!/bin/sh
# A joining host: kubeadm join with kbuild's generated JoinConfiguration, the
# token, CA hash (and certificate key for masters) from join-cluster.sh.
. ./scripts/lib.sh

if ! is_master; then
    # a node joins through the VIP: some master must answer behind it
    if ! wait_for 180 "the API servers through the VIP $VIP" vip --probe; then
        systemctl status --no-pager kbuild-vip.service 2>&1 | tail -n 15 >&2
        cat /run/kbuild-vip/status.json >&2 2>/dev/null
        exit 1
    fi
fi
if [ ! -f /etc/kubernetes/kubelet.conf ]; then
    KBUILD_TOKEN=$KUBE_TOKEN KBUILD_CA_HASH=$KUBE_CA_HASH KBUILD_CERT_KEY=${KUBE_CERT_KEY:-} \
        fill etc/kbuild/kubeadm-join.yaml etc/kbuild/kubeadm-join.final.yaml \
        KBUILD_TOKEN KBUILD_CA_HASH KBUILD_CERT_KEY
    if ! withheld kubeadm join --config etc/kbuild/kubeadm-join.final.yaml; then
        rm -f etc/kbuild/kubeadm-join.final.yaml
        kubeadm reset -f --cri-socket "$CRI_SOCKET" >/dev/null 2>&1 || true
        exit 1
    fi
    rm -f etc/kbuild/kubeadm-join.final.yaml
fi
if is_master; then
    mkdir -p /root/.kube
    cp /etc/kubernetes/admin.conf /root/.kube/config
    chmod 600 /root/.kube/config
fi
