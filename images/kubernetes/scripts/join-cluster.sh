#!/bin/sh
# master0, before hosts join: a fresh bootstrap token (30 min), the CA hash and,
# when masters join, a fresh certificate key; exported to join-host.sh.
. ./scripts/lib.sh

token=$(kubeadm token create --ttl 30m --description "kbuild join of ${KBUILD_JOIN_MASTERS}${KBUILD_JOIN_NODES:+ $KBUILD_JOIN_NODES}")
hash=$(kubeadm token create --print-join-command --ttl 1s 2>/dev/null | sed -n 's/.*--discovery-token-ca-cert-hash \(sha256:[0-9a-f]*\).*/\1/p')
[ -n "$hash" ] || { log "could not read the CA certificate hash"; exit 1; }
echo "kbuild-export: KUBE_TOKEN=$token"
echo "kbuild-export: KUBE_CA_HASH=$hash"
if [ -n "${KBUILD_JOIN_MASTERS:-}" ]; then
    key=$(kubeadm init phase upload-certs --upload-certs --config etc/kbuild/kubeadm-init.yaml | tail -n 1)
    case "$key" in
        *[!0-9a-f]* | "") log "kubeadm upload-certs printed no certificate key: $key"; exit 1 ;;
    esac
    echo "kbuild-export: KUBE_CERT_KEY=$key"
fi
