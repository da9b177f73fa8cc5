# Print the layers of the host's store that are complete (run by kbuild,
# read-only).
#
# Usage: present-layers.sh STORE HEX...
# One HEX a line for each layer whose marker can be trusted (layer-store.sh).
set -u
store=$1
shift
#include layer-store.sh
[ -d "$store" ] || exit 0
for h in "$@"; do
    if layer_ok "$store" "$h"; then echo "$h"; fi
done
exit 0
