# Read, compare and write files on the host (run by kbuild).
#
# Usage: files.sh read ROOT PATH            the bytes of a regular file; exit 3 when absent
#        files.sh sums ROOT PATH...         "MODE SHA256 PATH" of each regular file
#        files.sh put ROOT MODE PATH [MODE PATH...] <TAR
#
# PATHs are relative to ROOT, or absolute when ROOT is "". Under a ROOT (a
# cluster rootfs, made of image layers) no existing directory component of a
# PATH may be a symlink, so an image cannot redirect a read or a write out of
# its root filesystem: exit 3 naming it. For put, TAR holds members 0, 1, ...
# with the contents in the order of the PATHs; each file lands by rename
# (never half-written) with its octal MODE.
set -eu
op=$1 root=$2
shift 2

# confined ROOT PATH: refuse a symlink among PATH's directory components
confined() {
    [ -n "$1" ] || return 0
    prefix=$1 rest=$2
    while [ "${rest#*/}" != "$rest" ]; do
        prefix=$prefix/${rest%%/*} rest=${rest#*/}
        if [ -L "$prefix" ]; then
            echo "kbuild: ${prefix#"$1"/} is a symlink in $1; refusing to use $2 through it" >&2
            exit 3
        fi
    done
}

# full ROOT PATH: the path on the host
full() { if [ -n "$1" ]; then printf '%s/%s' "$1" "$2"; else printf '%s' "$2"; fi; }

case $op in
read)
    confined "$root" "$1"
    f=$(full "$root" "$1")
    [ -f "$f" ] || exit 3
    exec cat -- "$f"
    ;;
sums)
    for p in "$@"; do
        f=$(full "$root" "$p")
        ( confined "$root" "$p" ) 2>/dev/null || continue
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        mode=$(stat -c %a -- "$f") || continue
        sum=$(sha256sum <"$f") || continue
        printf '%s %s %s\n' "$mode" "${sum%% *}" "$p"
    done
    ;;
put)
    umask 077
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/kbuild-put.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    tar -x -f - -C "$tmp" --no-same-owner
    i=0
    while [ $# -ge 2 ]; do
        mode=$1 path=$2
        shift 2
        confined "$root" "$path"
        dest=$(full "$root" "$path")
        if [ -d "$dest" ] && [ ! -L "$dest" ]; then
            echo "kbuild: $dest is a directory; refusing to replace it with a file" >&2
            exit 3
        fi
        (umask 022 && mkdir -p -- "${dest%/*}/")
        part=$(mktemp "$dest.kbuild.XXXXXX")
        cat "$tmp/$i" >"$part"
        chmod "$mode" "$part"
        mv -f -- "$part" "$dest"
        i=$((i + 1))
    done
    ;;
*)
    echo "files.sh: unknown operation $op" >&2
    exit 2
    ;;
esac
