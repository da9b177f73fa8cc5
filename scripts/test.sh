#!/usr/bin/env bash
# The whole test suite: lint, types, unit and integration tests against real
# servers (registry, podman hosts, Kubernetes). Run as root on a Debian
# bookworm machine. Every stage runs; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

bash scripts/setup.sh || exit 1

failed=()
echo "== ruff ($(date -u +%T))"
ruff check kbuild tests benchmarks || failed+=(ruff)
echo "== mypy"
mypy kbuild || failed+=(mypy)

echo "== kubernetes base images ($(date -u +%T); binaries built from source once, cached in /var/cache/kbuild)"
# Built here, not inside a test: a cold build takes ~25 min on 2 cores, longer
# than any single test may run. The e2e tests then find them cached.
k8s_image() {
  KBUILD_ROOT=/var/cache/kbuild/kubernetes/store bash images/kubernetes/build.sh "$1" \
    >"/tmp/kbuild-test-k8s-image-$1.log" 2>&1 \
    || { tail -n 40 "/tmp/kbuild-test-k8s-image-$1.log" >&2; return 1; }
}
# the podman test hosts' images (Debian roots; arm64 under qemu-user-static:
# ~4 min cold) build beside it, cached in /var/cache/kbuild/hosts
python3 -c 'from kbuild.runtime.providers.podman import image as i
for arch in ("", "arm64"): i.ensure_host_image(i.HostImage(arch=arch))' \
  >/tmp/kbuild-test-host-images.log 2>&1 &
host_images=$!
k8s_image v1.37.2 || failed+=(kubernetes-image-v1.37.2)
wait "$host_images" || { tail -n 20 /tmp/kbuild-test-host-images.log >&2; failed+=(host-images); }
# v1.36.3 is only for the upgrade e2e (v1.36.3 -> v1.37.2): it builds (under
# nice -n 19) while the other tests run, and that test runs last.
k8s_image v1.36.3 &
older=$!

pytest_run() {
  KBUILD_TESTS_NO_SKIP=1 python3 -m pytest -q -p no:cacheprovider "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing on purpose" >&2
    failed+=(pytest-no-tests)
  elif [ "$rc" -ne 0 ]; then
    failed+=(pytest)
  fi
}
UPGRADE_E2E=tests/kubernetes/test_upgrade_e2e.py
echo "== pytest ($(date -u +%T))"
if [ "$#" -eq 0 ]; then
  pytest_run --ignore="$UPGRADE_E2E"
  wait "$older" || failed+=(kubernetes-image-v1.36.3)
  echo "== pytest: the upgrade e2e ($(date -u +%T))"
  pytest_run "$UPGRADE_E2E"
else
  wait "$older" || failed+=(kubernetes-image-v1.36.3)
  pytest_run "$@"
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "All checks passed ($(date -u +%T))."
