#!/bin/sh
# master0, before hosts are deleted: drain each leaving node and delete it.
. ./scripts/lib.sh

for ip in $(echo "${KBUILD_LEAVE_MASTERS:-},${KBUILD_LEAVE_NODES:-}" | tr , ' '); do
    node=$(node_of "$ip")
    if [ -z "$node" ]; then
        log "$ip: no node with this address (already gone)"
        continue
    fi
    kubectl drain "$node" --ignore-daemonsets --delete-emptydir-data --force --timeout=120s ||
        log "$node: drain did not finish; deleting it anyway"
    kubectl delete node "$node" --timeout=60s
done
