# Remove one cluster's data from a host after its rootfs was unmounted
# (run by kbuild delete).
#
# Usage: remove-cluster.sh DATA_ROOT CLUSTER ROOTFS_IN_MOUNTS
#   ROOTFS_IN_MOUNTS  DATA_ROOT/CLUSTER/rootfs as /proc/self/mounts writes it
#                     (kbuild's mount.mounts_escape: \040 for a space...)
# Kills processes still running from the cluster's rootfs, unmounts it if it
# is still mounted, removes DATA_ROOT/CLUSTER and, under the host lock
# (layer-store.sh), the layers no other cluster lists in its layers.list or
# links from its lower/ dir, and dead transfers (a transfer running for
# another cluster holds its lock and stays). When no cluster is left,
# DATA_ROOT itself goes, up to the directory kbuild created.
set -u
dr=$1 cluster=$2 entry=$3
#include layer-store.sh
base=$dr/$cluster rootfs=$dr/$cluster/rootfs store=$dr/layers
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    cwd=$(readlink "$p/cwd" 2>/dev/null) || cwd=""
    case "$exe" in "$rootfs"/*) kill -9 "${p#/proc/}" 2>/dev/null; continue ;; esac
    case "$cwd" in "$rootfs"|"$rootfs"/*) kill -9 "${p#/proc/}" 2>/dev/null ;; esac
done
if grep -qF -e " $entry " /proc/self/mounts; then umount "$rootfs" 2>/dev/null || umount -l "$rootfs"; fi
[ -d "$dr" ] || exit 0
[ -d "$store" ] && host_lock "$store"
rm -rf "$base"
used=""
for c in "$dr"/*; do
    [ -f "$c/layers.list" ] && used="$used $(tr '\n' ' ' <"$c/layers.list")"
    [ -d "$c/lower" ] || continue
    for l in "$c/lower"/*; do
        t=$(readlink "$l" 2>/dev/null) || continue
        t=${t%/fs}; used="$used ${t##*/}"
    done
done
if [ -d "$store" ]; then
    for l in "$store"/*; do
        [ -e "$l" ] || continue
        case " $used " in *" ${l##*/} "*) ;; *) rm -rf "$l" ;; esac
    done
    clear_dead "$store"
fi
others=$(find "$dr" -mindepth 1 -maxdepth 1 ! -name layers ! -name .kbuild-created | head -n 1)
if [ -z "$others" ]; then
    rm -f "$store/.lock"
    rmdir "$store" 2>/dev/null
    if [ -f "$dr/.kbuild-created" ]; then
        top=$(cat "$dr/.kbuild-created")
        case "$dr/" in "$top"/*) rm -rf "$top" ;; esac
    fi
fi
exit 0
