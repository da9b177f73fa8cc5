# Create DATA_ROOT and remember the topmost directory kbuild created, so that
# `kbuild delete` can leave the host as it was; with CLUSTER, record the
# layers the cluster uses (run by kbuild before any layer is sent).
#
# Usage: prepare-data-root.sh DATA_ROOT [CLUSTER HEX...]
# DATA_ROOT/CLUSTER/layers.list gets the HEXes, one a line, and the layers
# the rootfs is mounted on now (lower/: the image an update replaces, still
# used by processes started from it), under the host lock (layer-store.sh):
# a delete of another cluster running at the same time either sees the list
# and keeps those layers, or has removed them before kbuild looks which
# layers the host has (and then they are sent).
set -eu
dr=$1
#include layer-store.sh
tries=0
while :; do
    if [ ! -d "$dr" ]; then
        top=$dr
        while [ ! -e "$(dirname "$top")" ]; do top=$(dirname "$top"); done
        mkdir -p "$dr"
        printf '%s\n' "$top" >"$dr/.kbuild-created"
    fi
    chmod 711 "$dr"
    [ $# -ge 2 ] || exit 0
    mkdir -p "$dr/layers"
    if host_lock "$dr/layers"; then break; fi
    tries=$((tries + 1))
    # the data root was removed by the delete of the host's last other cluster
    [ "$tries" -lt 5 ] || { echo "data root $dr keeps being removed" >&2; exit 1; }
done
base=$dr/$2
shift 2
mkdir -p "$base"
chmod 700 "$base"
for l in "$base/lower"/*; do
    t=$(readlink "$l" 2>/dev/null) || continue
    t=${t%/fs}
    set -- "$@" "${t##*/}"
done
printf '%s\n' "$@" | awk '!seen[$0]++' >"$base/layers.list.tmp"
mv -f "$base/layers.list.tmp" "$base/layers.list"
