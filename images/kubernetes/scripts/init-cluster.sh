#!/bin/sh
# master0: kubeadm init with kbuild's generated configuration, the admin
# kubeconfig for root, the network add-on (flannel).
. ./scripts/lib.sh

if [ ! -f /etc/kubernetes/admin.conf ]; then
    # a failed init is undone, so that a re-run of `kbuild run` starts clean
    if ! withheld kubeadm init --config etc/kbuild/kubeadm-init.yaml --skip-token-print; then
        kubeadm reset -f --cri-socket "$CRI_SOCKET" >/dev/null 2>&1 || true
        exit 1
    fi
fi
mkdir -p /root/.kube
cp /etc/kubernetes/admin.conf /root/.kube/config
chmod 600 /root/.kube/config
wait_for 120 "the API server" kubectl get --raw /readyz
# manifests/kube-flannel.yaml is rendered by kbuild from kube-flannel.yaml.tmpl (the image tag)
FLANNEL_BACKEND=${FlannelBackend:-vxlan} FLANNEL_IFACE_CAN_REACH=$KBUILD_MASTER0 \
    fill manifests/kube-flannel.yaml etc/kbuild/kube-flannel.yaml \
    POD_CIDR FLANNEL_BACKEND FLANNEL_IFACE_CAN_REACH
kubectl apply -f etc/kbuild/kube-flannel.yaml
