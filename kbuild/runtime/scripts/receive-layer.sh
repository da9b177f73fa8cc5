# Receive one layer on stdin into the host's layer store (run by kbuild).
#
# Usage: receive-layer.sh STORE HEX DECOMPRESS [SUM]
#   STORE       <dataRoot>/layers
#   HEX         the layer's diffID without "sha256:" (sha256 of the tar)
#   DECOMPRESS  zstd | gzip | none: how the stream on stdin is compressed
#   SUM         sha256 (hex) of the stream exactly as it arrives on stdin:
#               the blob digest for a compressed blob (kbuild checked on its
#               side that the blob decompresses to the tar HEX), HEX for a
#               plain tar (the default)
#
# The stream is unpacked under a temp dir next to the store while `tee`
# feeds a fifo read by openssl dgst (or sha256sum without openssl); hashing
# the stream as received (not the tar after decompression) hashes 3x fewer
# bytes for a zstd layer and makes no extra copy of the tar. tar reads 1 MiB
# records (-b 2048) instead of 10 KiB ones: a quarter less time per layer. Only when the
# sum equals SUM is the temp dir renamed to STORE/HEX (holding fs/ and the
# marker file "verified", see layer-store.sh). Any failure removes the temp
# dir, so an interrupted transfer leaves no partial layer; the temp dir is
# flocked while the transfer runs, and transfers whose owner died without
# cleaning up (killed, power cut) are removed by the next transfer. A layer
# whose marker is not trusted any more is replaced. OCI whiteouts (.wh.NAME)
# become overlay whiteouts (0/0 char devices).
set -eu
store=$1 hex=$2 decompress=$3 sum=${4:-$2}
umask 022
#include layer-store.sh
if layer_ok "$store" "$hex"; then
    cat >/dev/null
    echo "present $hex"
    exit 0
fi
case $decompress in
    zstd) unpack() { zstd -q -d -c; } ;;
    gzip) unpack() { gzip -d -c; } ;;
    none) unpack() { cat; } ;;
    *) echo "unknown compression $decompress" >&2; exit 2 ;;
esac
case $sum in
    *[!0-9a-f]*) echo "bad sha256 $sum" >&2; exit 2 ;;
esac
[ ${#sum} = 64 ] || { echo "bad sha256 $sum" >&2; exit 2; }
mkdir -p "$store"
host_lock "$store" || { echo "layer store $store was removed" >&2; exit 6; }
tmp=$(mktemp -d "$store/.incoming-$hex.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP PIPE
exec 9<"$tmp"
flock -n 9
clear_dead "$store" "$tmp"
host_unlock
chmod 755 "$tmp"
mkfifo "$tmp/fifo"
mkdir "$tmp/fs"
# OpenSSL's sha256 uses the CPU's SHA instructions (3x faster than coreutils
# sha256sum where both are there); sha256sum when the host has no openssl.
if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha256 -r <"$tmp/fifo" >"$tmp/sum" &
else
    sha256sum <"$tmp/fifo" >"$tmp/sum" &
fi
sumpid=$!
status=0
untar() {
    tar -x -b 2048 -f - -C "$tmp/fs" --numeric-owner --same-permissions --no-overwrite-dir 2>"$tmp/tar.err" \
        || echo "tar failed: $?" >>"$tmp/tar.err.status"
    cat >/dev/null
}
if [ "$decompress" = none ]; then
    tee "$tmp/fifo" | untar || status=$?
else
    tee "$tmp/fifo" | { unpack || echo "decompress failed: $?" >"$tmp/unpack.err"; cat >/dev/null; } \
        | untar || status=$?
fi
wait "$sumpid" || status=$?
if [ -s "$tmp/unpack.err" ]; then cat "$tmp/unpack.err" >&2; exit 3; fi
if [ -e "$tmp/tar.err.status" ]; then cat "$tmp/tar.err.status" "$tmp/tar.err" >&2; exit 3; fi
[ "$status" = 0 ] || { echo "receive pipeline failed ($status)" >&2; exit 3; }
read -r got _ <"$tmp/sum"
if [ "$got" != "$sum" ]; then
    if [ "$decompress" = none ]; then
        echo "layer $hex: sha256 of the received tar is $got (transfer damaged or cut)" >&2
    else
        echo "layer $hex: sha256 of the received $decompress blob is $got, not $sum (transfer damaged or cut)" >&2
    fi
    exit 4
fi
# OCI whiteouts to overlay whiteouts.
find "$tmp/fs" -name '.wh.*' ! -name '.wh..wh..opq' -exec sh -c '
    for wh do
        dir=${wh%/*}; name=${wh##*/.wh.}
        rm -rf "$dir/$name" && mknod "$dir/$name" c 0 0 && rm -f "$wh"
    done' sh {} +
if [ -n "$(find "$tmp/fs" -name '.wh..wh..opq' -print -quit)" ]; then
    command -v setfattr >/dev/null 2>&1 || {
        echo "layer $hex has opaque directories; the host needs setfattr (package attr)" >&2
        exit 5
    }
    find "$tmp/fs" -name '.wh..wh..opq' -exec sh -c '
        for o do setfattr -n trusted.overlay.opaque -v y "${o%/*}" && rm -f "$o"; done' sh {} +
fi
rm -f "$tmp/fifo" "$tmp/sum" "$tmp/tar.err"
write_marker "$tmp" "$hex"
sync "$tmp/verified" 2>/dev/null || sync
host_lock "$store" || { echo "layer store $store was removed" >&2; exit 6; }
if layer_ok "$store" "$hex"; then
    rm -rf "$tmp"  # another transfer put it there meanwhile
else
    # a layer not trusted any more is replaced (kbuild remounts the rootfs
    # over it: mount.py compares the layer dirs with those it mounted)
    if [ -e "$store/$hex" ]; then mv -T "$store/$hex" "$tmp.old"; fi
    mv -T "$tmp" "$store/$hex" || { echo "cannot move layer into $store/$hex" >&2; exit 6; }
    rm -rf "$tmp.old"
fi
host_unlock
trap - EXIT
echo "received $hex"
