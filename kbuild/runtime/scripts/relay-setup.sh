# Prepare or end a relay run on this host (run by kbuild).
#
# Usage: relay-setup.sh begin RUNID EXPIRES   claim leftovers, make RUNDIR
#                                             (0700), start the cleanup timer
#        relay-setup.sh authorize RUNID       make RUNDIR/authorized the run's
#                                             lines in root's authorized_keys
#        relay-setup.sh probe RUNID           probe each child of RUNDIR/layers
#        relay-setup.sh end RUNID             remove everything of the run
# RUNDIR is /run/kbuild-relay/RUNID. EXPIRES is a Unix time: the keys'
# expiry-time, and when the systemd timer kbuild-relay-RUNID.timer removes
# the run's leftovers should kbuild not come back (a client that died).
# Leftovers of other runs (RUNDIR gone or expired) are removed by "begin".
set -eu
op=$1 run=$2
base=/run/kbuild-relay
dir=$base/$run
home=$(awk -F: '$1 == "root" { print $6 }' /etc/passwd)
ak=${home:-/root}/.ssh/authorized_keys
#include relay-clean.sh
case $op in
begin)
    case $run in *[!0-9a-f]*|"") echo "bad run id $run" >&2; exit 2 ;; esac
    relay_claim
    umask 077
    mkdir -p "$base"
    mkdir "$dir"
    now=$(date +%s)
    systemd-run --quiet --unit "kbuild-relay-$run" --on-active=$(( $3 - now ))s \
        --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
        sh "$dir/cleanup.sh" "$run" >/dev/null
    echo "$3" >"$dir/expires"
    ;;
authorize)
    relay_lock
    if [ ! -e "$ak" ]; then
        [ -d "${ak%/*}" ] || { mkdir -m 700 "${ak%/*}"; : >"$dir/ssh-dir-created"; }
        : >"$dir/ak-created"
        (umask 077 && : >"$ak")
    fi
    relay_strip "$run"  # a new plan replaces the run's lines
    cat "$dir/authorized" >>"$ak"
    ;;
probe)
    while read -r _ _ _ _ kids; do
        [ "$kids" != - ] && echo "$kids" | tr , '\n'
    done <"$dir/layers" | sort -u | while read -r kid; do
        ip=${kid%:*} port=${kid##*:}
        (
            out=$(timeout 20 ssh -i "$dir/key" -o BatchMode=yes -o IdentitiesOnly=yes \
                -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$dir/known_hosts" \
                -o ConnectTimeout=10 -o LogLevel=ERROR -p "$port" "root@$ip" probe 2>&1) || true
            if [ "$out" = "kbuild-relay ok" ]; then echo "ok $ip"; else echo "fail $ip $(echo "$out" | head -c 200 | tr '\n' ' ')"; fi
        ) &
    done
    wait
    ;;
end)
    relay_remove "$run"
    ;;
esac
