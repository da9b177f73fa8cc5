# Receive one listed layer on stdin and pass it on to this host's children
# while it arrives (kbuild writes it to /run/kbuild-relay/RUNID/hop.sh).
#
# Usage: hop.sh RUNDIR HEX [keep]
# "keep" (given by kbuild on a tree's root only, never through the gate):
# also keep the stream in STORE/.relay-RUNID-HEX until the run ends, so the
# hosts below a host that failed can get it again from here.
# RUNDIR/layers has one line per layer kbuild listed for this run on this
# host: "HEX MODE SUM SIZE CHILDREN" (CHILDREN: ip:port,... or -). At most
# SIZE bytes are read; `tee -p` copies them into one fifo per child, each
# read by `ssh root@child receive HEX` with this host's run key, and into
# receive-layer.sh, which checks SUM before the layer counts as complete. A
# child that fails or goes away (ssh keepalive: RUNDIR/alive seconds x 3) is
# dropped; the others go on. Prints "child IP failed" for each one dropped.
set -euf
dir=$1 hex=$2 keep=${3:-}
line=$(grep "^$hex " "$dir/layers") || { echo "kbuild-relay: layer $hex not listed" >&2; exit 1; }
set -- $line
mode=$2 sum=$3 size=$4 kids=$5
store=$(cat "$dir/store")
alive=$(cat "$dir/alive")
read -r _ _ _ _ pgid _ </proc/$$/stat
mkdir -p "$dir/pids"
echo "$pgid" >"$dir/pids/$$"
work=$(mktemp -d "$dir/hop.XXXXXX")
trap 'rm -rf "$work" "$dir/pids/$$"' EXIT
outs=""
if [ "$kids" != - ]; then
    for kid in $(echo "$kids" | tr , ' '); do
        ip=${kid%:*} port=${kid##*:}
        mkfifo "$work/$ip"
        ssh -i "$dir/key" -o BatchMode=yes -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes \
            -o UserKnownHostsFile="$dir/known_hosts" -o ConnectTimeout=10 \
            -o ServerAliveInterval="$alive" -o ServerAliveCountMax=3 -o LogLevel=ERROR \
            -p "$port" "root@$ip" "receive $hex" <"$work/$ip" >"$work/$ip.out" 2>&1 \
            || echo "$?" >"$work/$ip.failed" &
        outs="$outs $work/$ip"
    done
fi
blob=""
if [ "$keep" = keep ]; then blob=$store/.relay-${dir##*/}-$hex; fi
status=0
# shellcheck disable=SC2086
head -c "$size" | tee -p $outs ${blob:+"$blob"} \
    | sh "$dir/receive-layer.sh" "$store" "$hex" "$mode" "$sum" || status=$?
wait
if [ "$status" != 0 ] && [ -n "$blob" ]; then rm -f "$blob"; fi
for f in "$work"/*.failed; do
    [ -e "$f" ] || continue
    ip=${f##*/}; ip=${ip%.failed}
    echo "child $ip failed: $(tail -c 300 "$work/$ip.out" | tr '\n' ' ')" >&2
done
exit "$status"
