# The host layer store's shared rules (kbuild puts this text where a script
# says `#include layer-store.sh`; see kbuild/runtime/remote.py).
#
# <dataRoot>/layers/.lock     the host lock (flock): taken to write a cluster's
#                             layers.list, to start a transfer, to install a
#                             layer and to remove layers
# <dataRoot>/layers/<hex>/    fs/ and the marker "verified"
# <dataRoot>/layers/.incoming-<hex>.*
#                             a transfer; its owner holds a flock on the dir,
#                             so one nobody holds is dead and may go
#
# The marker records the boot it was written in and the layer's entry count
# and byte total. Files are not fsynced (that would slow every transfer), so
# after a power cut a layer may hold lost or empty files: a marker from an
# earlier boot is trusted only when fs/ still adds up to its counts.

# host_lock STORE: hold STORE/.lock on fd 8 (until host_unlock or exit).
# Fails when STORE went away (removed with the data root while waiting).
host_lock() {
    while [ -d "$1" ]; do
        exec 8>>"$1/.lock"
        flock -w 300 8 || { echo "layer store $1: lock held for 5 minutes" >&2; exit 7; }
        # the file locked must still be the one at that path
        [ "$(stat -c %d:%i "$1/.lock" 2>/dev/null)" = "$(stat -L -c %d:%i /proc/self/fd/8)" ] \
            && return 0
        exec 8>&-
    done
    return 1
}

host_unlock() {
    exec 8>&-
}

# boot_id: this boot's id.
boot_id() {
    cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown
}

# layer_count DIR: "ENTRIES BYTES" below DIR (bytes of its regular files).
layer_count() {
    find "$1" -mindepth 1 -printf '%y %s\n' \
        | awk '{ n++; if ($1 == "f") b += $2 } END { printf "%.0f %.0f\n", n, b }'
}

# write_marker DIR HEX: DIR/verified for the layer unpacked in DIR/fs.
write_marker() {
    set -- "$1" "$2" "$(boot_id)" "$(layer_count "$1/fs")"
    printf 'hex=%s\nboot=%s\nfiles=%s\nbytes=%s\n' "$2" "$3" "${4% *}" "${4#* }" >"$1/verified"
}

# layer_ok STORE HEX: the layer is complete (see above). A marker without
# counts (written by an older kbuild) is not trusted: the layer is sent again.
layer_ok() {
    [ -f "$1/$2/verified" ] || return 1
    _boot="" _files="" _bytes=""
    while IFS='=' read -r _k _v; do
        case $_k in boot) _boot=$_v ;; files) _files=$_v ;; bytes) _bytes=$_v ;; esac
    done <"$1/$2/verified"
    [ -n "$_files" ] && [ -n "$_bytes" ] || return 1
    [ "$_boot" = "$(boot_id)" ] && return 0
    [ "$(layer_count "$1/$2/fs")" = "$_files $_bytes" ]
}

# clear_dead STORE [KEEP]: remove transfers whose owner is gone (nobody holds
# their lock), except KEEP. Call with the host lock held: a new transfer
# creates and locks its dir under it.
clear_dead() {
    for _d in "$1"/.incoming-*; do
        [ -d "$_d" ] && [ "$_d" != "${2:-}" ] || continue
        if flock -n "$_d" true 2>/dev/null; then rm -rf "$_d"; fi
    done
}
