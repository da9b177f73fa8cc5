# Remove a relay run's leftovers (kbuild writes it to
# /run/kbuild-relay/RUNID/cleanup.sh; the run's systemd timer runs it at the
# expiry time when the client did not end the run itself).
#
# Usage: cleanup.sh RUNID
set -eu
run=$1
base=/run/kbuild-relay
home=$(awk -F: '$1 == "root" { print $6 }' /etc/passwd)
ak=${home:-/root}/.ssh/authorized_keys
#include relay-clean.sh
relay_remove "$run"
