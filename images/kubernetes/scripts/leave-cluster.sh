#!/bin/sh
# master0, before hosts are deleted: drain each leaving node, remove a leaving
# master's etcd member (before its etcd stops, so the others keep quorum), and
# delete the node.
. ./scripts/lib.sh

etcdctl_m0() {
    kubectl -n kube-system exec "etcd-$(node_of "$KBUILD_MASTER0")" -- etcdctl \
        --cacert /etc/kubernetes/pki/etcd/ca.crt --cert /etc/kubernetes/pki/etcd/server.crt \
        --key /etc/kubernetes/pki/etcd/server.key "$@"
}

for ip in $(echo "${KBUILD_LEAVE_MASTERS:-},${KBUILD_LEAVE_NODES:-}" | tr , ' '); do
    node=$(node_of "$ip")
    if [ -z "$node" ]; then
        log "$ip: no node with this address (already gone)"
        continue
    fi
    kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force --timeout=120s ||
        log "$node: drain did not finish; deleting it anyway"
    case ",${KBUILD_LEAVE_MASTERS:-}," in
        *,"$ip",*)
            id=$(etcdctl_m0 member list | while IFS=', ' read -r mid _st name _rest; do
                if [ "$name" = "$node" ]; then echo "$mid"; fi
            done)
            if [ -n "$id" ]; then
                etcdctl_m0 member remove "$id"
            else
                log "$node: no etcd member of this name"
            fi
            ;;
    esac
    kubectl delete node "$node" --timeout=60s
done
