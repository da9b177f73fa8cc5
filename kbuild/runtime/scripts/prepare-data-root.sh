# Create DATA_ROOT and remember the topmost directory kbuild created, so that
# `kbuild delete` can leave the host as it was (run by kbuild).
#
# Usage: prepare-data-root.sh DATA_ROOT
set -eu
dr=$1
if [ ! -d "$dr" ]; then
    top=$dr
    while [ ! -e "$(dirname "$top")" ]; do top=$(dirname "$top"); done
    mkdir -p "$dr"
    printf '%s\n' "$top" >"$dr/.kbuild-created"
fi
chmod 711 "$dr"
