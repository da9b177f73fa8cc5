# Removing a relay run's traces (kbuild puts this text where a script says
# `#include relay-clean.sh`): the run's key lines in root's authorized_keys
# (marked "kbuild-relay-RUNID"), its processes, the streams a tree's root
# kept (STORE/.relay-RUNID-*) and /run/kbuild-relay/RUNID.
# Needs: base, ak (see relay-setup.sh).

# relay_lock: a flock on root's home directory on fd 7 (authorized_keys is
# changed under it; no lock file to leave behind).
relay_lock() {
    exec 7<"${ak%/.ssh/*}"
    flock -w 60 7
}

# relay_strip RUNID: take that run's lines out of authorized_keys (a new
# file with the same mode and owner, renamed over it). Hold relay_lock.
relay_strip() {
    if [ -f "$ak" ] && grep -q " kbuild-relay-$1\$" "$ak"; then
        _t=$(mktemp "$ak.kbuild.XXXXXX")
        grep -v " kbuild-relay-$1\$" "$ak" >"$_t" || true
        chmod --reference="$ak" "$_t" && chown --reference="$ak" "$_t"
        mv -f "$_t" "$ak"
    fi
}

# relay_remove RUNID: every trace of that run on this host.
relay_remove() {
    _d=$base/$1
    for _p in "$_d"/pids/*; do
        [ -f "$_p" ] || continue
        _g=$(cat "$_p")
        case $_g in *[!0-9]*|""|0|1) continue ;; esac
        kill -TERM -- "-$_g" 2>/dev/null || true
    done
    if [ -f "$_d/store" ]; then rm -f "$(cat "$_d/store")/.relay-$1-"*; fi
    relay_lock
    relay_strip "$1"
    if [ -e "$_d/ak-created" ] && [ -f "$ak" ] && [ ! -s "$ak" ]; then
        rm -f "$ak"
        [ -e "$_d/ssh-dir-created" ] && rmdir "${ak%/*}" 2>/dev/null || true
    fi
    rm -rf "$_d"
    rmdir "$base" 2>/dev/null || true
    exec 7<&-
    systemctl stop --no-block "kbuild-relay-$1.timer" >/dev/null 2>&1 || true
}

# relay_claim: remove the leftovers of runs whose client did not come back
# (their dir is gone or their expiry time passed).
relay_claim() {
    _now=$(date +%s)
    [ -f "$ak" ] && grep -o ' kbuild-relay-[0-9a-f]*$' "$ak" | sort -u | while read -r _m; do
        _r=${_m#kbuild-relay-}
        _e=$(cat "$base/$_r/expires" 2>/dev/null || echo 0)
        [ "$_e" -gt "$_now" ] || relay_remove "$_r"
    done
    for _x in "$base"/*/expires; do
        [ -f "$_x" ] || continue
        _r=${_x%/expires}; _r=${_r##*/}
        [ "$(cat "$_x")" -gt "$_now" ] || relay_remove "$_r"
    done
    return 0
}
