#!/bin/sh
# The only command a relay key may run (kbuild writes it to
# /run/kbuild-relay/RUNID/gate; authorized_keys names it in command="...").
#
# Usage (by sshd): gate SENDER_IP, the request in SSH_ORIGINAL_COMMAND:
#   probe        print "kbuild-relay ok" (the edge works)
#   receive HEX  receive layer HEX on stdin (and pass it on) with hop.sh, only
#                when kbuild listed HEX for this run in RUNDIR/layers on THIS
#                host; the sha256, the byte count and the children come from
#                that list, never from the sender.
# Anything else is refused (exit 1): no shell, no other command.
set -euf
dir=${0%/*}
req=${SSH_ORIGINAL_COMMAND:-}
case $req in
    probe) echo "kbuild-relay ok"; exit 0 ;;
    "receive "*) hex=${req#receive } ;;
    *) echo "kbuild-relay: refused" >&2; exit 1 ;;
esac
case $hex in *[!0-9a-f]*|"") echo "kbuild-relay: refused" >&2; exit 1 ;; esac
[ ${#hex} = 64 ] || { echo "kbuild-relay: refused" >&2; exit 1; }
grep -q "^$hex " "$dir/layers" || { echo "kbuild-relay: layer $hex not listed" >&2; exit 1; }
exec sh "$dir/hop.sh" "$dir" "$hex"
