#!/usr/bin/env bash
# The whole test suite: lint, types, unit and integration tests against real
# servers (registry, podman hosts). Run as root on a Debian bookworm machine.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== ruff"
ruff check kbuild tests benchmarks
echo "== mypy"
mypy kbuild

echo "== pytest"
set +e
python3 -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$rc"
