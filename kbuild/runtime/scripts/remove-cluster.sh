# Remove one cluster's data from a host after its rootfs was unmounted
# (run by kbuild delete).
#
# Usage: remove-cluster.sh DATA_ROOT CLUSTER
# Kills processes still running from the cluster's rootfs, removes
# DATA_ROOT/CLUSTER, the layers no other cluster on the host uses, and, when no
# cluster is left, DATA_ROOT itself up to the directory kbuild created.
set -u
dr=$1 cluster=$2
base=$dr/$cluster rootfs=$base/rootfs
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    cwd=$(readlink "$p/cwd" 2>/dev/null) || cwd=""
    case "$exe" in "$rootfs"/*) kill -9 "${p#/proc/}" 2>/dev/null; continue ;; esac
    case "$cwd" in "$rootfs"|"$rootfs"/*) kill -9 "${p#/proc/}" 2>/dev/null ;; esac
done
if grep -q " $rootfs " /proc/self/mounts; then umount "$rootfs" 2>/dev/null || umount -l "$rootfs"; fi
rm -rf "$base"
[ -d "$dr" ] || exit 0
used=""
for c in "$dr"/*/lower; do
    [ -d "$c" ] || continue
    for l in "$c"/*; do
        t=$(readlink "$l" 2>/dev/null) || continue
        t=${t%/fs}; used="$used ${t##*/}"
    done
done
if [ -d "$dr/layers" ]; then
    for l in "$dr/layers"/* "$dr/layers"/.incoming-*; do
        [ -e "$l" ] || continue
        case " $used " in *" ${l##*/} "*) ;; *) rm -rf "$l" ;; esac
    done
fi
others=$(find "$dr" -mindepth 1 -maxdepth 1 ! -name layers ! -name .kbuild-created | head -n 1)
if [ -z "$others" ]; then
    rmdir "$dr/layers" 2>/dev/null
    if [ -f "$dr/.kbuild-created" ]; then
        top=$(cat "$dr/.kbuild-created")
        case "$dr/" in "$top"/*) rm -rf "$top" ;; esac
    fi
fi
exit 0
