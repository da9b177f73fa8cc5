#!/bin/sh
# master0: kubeadm init with kbuild's generated configuration, the admin
# kubeconfig for root, the network add-on (flannel).
. ./scripts/lib.sh

if [ ! -f /etc/kubernetes/admin.conf ]; then
    # a failed init is undone, so that a re-run of `kbuild run` starts clean
    if ! kubeadm init --config etc/kbuild/kubeadm-init.yaml --skip-token-print; then
        kubeadm reset -f --cri-socket "$CRI_SOCKET" >/dev/null 2>&1 || true
        exit 1
    fi
fi
mkdir -p /root/.kube
cp /etc/kubernetes/admin.conf /root/.kube/config
chmod 600 /root/.kube/config
wait_for 120 "the API server" kubectl get --raw /readyz
# manifests/kube-flannel.yaml is rendered by kbuild from kube-flannel.yaml.tmpl (the image tag)
sed -e "s|\${POD_CIDR}|$POD_CIDR|g" -e "s|\${FLANNEL_BACKEND}|${FlannelBackend:-vxlan}|g" \
    -e "s|args: \[--ip-masq, --kube-subnet-mgr\]|args: [--ip-masq, --kube-subnet-mgr, --iface-can-reach=$KBUILD_MASTER0]|" \
    manifests/kube-flannel.yaml >etc/kbuild/kube-flannel.yaml
kubectl apply -f etc/kbuild/kube-flannel.yaml
