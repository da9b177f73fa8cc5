"""``kbuild login/logout/push/pull`` as a user runs them (subprocesses, real registries)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.layerstore import Store
from tests.fixtures import registry as _fixtures
from tests.fixtures.registry import PASSWORD, USER, CutProxy, RegistryServer
from tests.registry.images import make_image, random_bytes

pytestmark = pytest.mark.integration
MB = 1 << 20
# the real registries of tests/fixtures/registry.py, as fixtures of this module
open_registry = _fixtures.open_registry
tls_registry = _fixtures.tls_registry
cut_proxy_factory = _fixtures.cut_proxy_factory


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "KBUILD_ROOT")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    env.update(extra)
    return env


def kbuild(args: list[str], env: dict[str, str], *, stdin: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the kbuild CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "kbuild.cli.main", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=timeout, check=False)


def test_login_logout_with_password_stdin(tls_registry: RegistryServer, tmp_path: Path) -> None:
    env = _env(tmp_path, KBUILD_CERTS_D=str(tls_registry.certs_d))
    bad = kbuild(["login", "-u", USER, "--password-stdin", tls_registry.host], env,
                 stdin="nope\n")
    assert bad.returncode == 1
    assert "wrong username or password" in bad.stderr and "Traceback" not in bad.stderr
    assert "Hint: " in bad.stderr

    ok = kbuild(["login", "-u", USER, "--password-stdin", tls_registry.host], env,
                stdin=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    config = tmp_path / "docker" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert tls_registry.host in json.loads(config.read_text())["auths"]
    assert PASSWORD not in ok.stdout + ok.stderr

    root = tmp_path / "root"
    desc = make_image(Store(root), "app:1", [{"f": b"cli"}])
    ref = f"{tls_registry.host}/cli/app:1"
    push = kbuild(["--root", str(root), "push", "-q", "app:1", ref], env)
    assert push.returncode == 0, push.stderr
    assert push.stdout.strip() == desc.digest and push.stderr == ""
    pull = kbuild(["--root", str(tmp_path / "root2"), "pull", "--progress", "plain", ref], env)
    assert pull.returncode == 0, pull.stderr
    assert pull.stdout.strip() == desc.digest
    assert "downloaded" in pull.stderr

    out = kbuild(["logout", tls_registry.host], env)
    assert out.returncode == 0 and "Removed" in out.stdout
    again = kbuild(["logout", tls_registry.host], env)
    assert again.returncode == 2 and "not logged in" in again.stderr
    denied = kbuild(["--root", str(tmp_path / "root3"), "pull", ref], env)
    assert denied.returncode == 1 and "authentication required" in denied.stderr


def test_tls_verify_false_flag(tls_registry: RegistryServer, tmp_path: Path) -> None:
    env = _env(tmp_path)
    refused = kbuild(["login", "-u", USER, "--password-stdin", tls_registry.host], env,
                     stdin=PASSWORD)
    assert refused.returncode == 1 and "TLS certificate not trusted" in refused.stderr
    ok = kbuild(["login", "--tls-verify=false", "-u", USER, "--password-stdin",
                 tls_registry.host], env, stdin=PASSWORD)
    assert ok.returncode == 0, ok.stderr


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kbuild.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen[str], cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    try:
        while not cond():
            if proc.poll() is not None:
                raise AssertionError(f"kbuild ended before the kill: {proc.communicate()}")
            if time.monotonic() > deadline:
                raise AssertionError("transfer never reached the kill point")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_killed_push_resumes_and_completes(open_registry: RegistryServer,
                                           cut_proxy_factory: Callable[[int], CutProxy],
                                           tmp_path: Path) -> None:
    root = tmp_path / "root"
    layers = [{f"l{i}": random_bytes(3 * MB)} for i in range(3)]
    desc = make_image(Store(root), "app:1", layers)
    proxy = cut_proxy_factory(open_registry.port)
    proxy.rate = 4 * MB
    env = _env(tmp_path)
    ref = f"{proxy.host}/k/app:1"
    args = ["--root", str(root), "push", "-j", "1", "--chunk-size", "1M", "--progress",
            "plain", "app:1", ref]
    proc = _start(args, env)
    _kill_when(proc, lambda: proxy.up_bytes > 5 * MB)
    first = proxy.up_bytes
    assert proc.returncode == -signal.SIGKILL
    proxy.rate = None
    done = kbuild(args, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == desc.digest
    assert "exists" in done.stderr, "blobs finished before the kill were uploaded again"
    total = sum(Store(root).blob_size(b["digest"]) for b in
                Store(root).read_manifest(desc)["layers"])
    assert proxy.up_bytes - first < total - 2 * MB
    pulled = kbuild(["--root", str(tmp_path / "p"), "pull", "-q",
                     f"{open_registry.host}/k/app:1"], env)
    assert pulled.stdout.strip() == desc.digest


def test_killed_pull_resumes_with_range(open_registry: RegistryServer,
                                        cut_proxy_factory: Callable[[int], CutProxy],
                                        tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    desc = make_image(src, "app:1", [{"big": random_bytes(8 * MB)}])
    env = _env(tmp_path)
    assert kbuild(["--root", str(src.root), "push", "-q", "app:1",
                   f"{open_registry.host}/k/app:1"], env).returncode == 0
    layer = src.read_manifest(desc)["layers"][0]
    proxy = cut_proxy_factory(open_registry.port)
    proxy.rate = 4 * MB
    root = tmp_path / "dst"
    args = ["--root", str(root), "pull", "--progress", "plain", f"{proxy.host}/k/app:1"]
    proc = _start(args, env)
    _kill_when(proc, lambda: proxy.down_bytes > 3 * MB)
    partial = list((root / "tmp").glob(f"partial-{layer['digest'][7:]}"))
    assert partial and 0 < partial[0].stat().st_size < layer["size"]
    assert not Store(root).has_blob(layer["digest"])
    proxy.rate = None
    before = proxy.down_bytes
    done = kbuild(args, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == desc.digest
    assert "resuming at byte" in done.stderr
    assert proxy.down_bytes - before < layer["size"] - 2 * MB
    assert Store(root).has_blob(layer["digest"])
