# Keep a cluster's hostAliases in /etc/hosts (run by kbuild).
#
# Usage: host-aliases.sh CLUSTER   (the wanted lines "IP NAME…" on stdin;
#                                   empty stdin removes the cluster's lines)
# Lines are marked "# kbuild:CLUSTER". /etc/hosts is rewritten in place (it
# may be a bind mount) and only when its content changes; prints "changed".
set -eu
cluster=$1
mark="# kbuild:$cluster"
want=$(mktemp) new=$(mktemp)
trap 'rm -f "$want" "$new"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
    [ -n "$line" ] && printf '%s %s\n' "$line" "$mark"
done >"$want"
grep -v -- " $mark\$" /etc/hosts >"$new" || true
cat "$want" >>"$new"
if ! cmp -s "$new" /etc/hosts; then
    cat "$new" >/etc/hosts
    echo changed
fi
