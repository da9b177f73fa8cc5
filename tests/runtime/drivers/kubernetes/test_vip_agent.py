"""The VIP agent (images/kubernetes/vip-agent) for real, in network namespaces
this test makes: a client namespace running the agent, two backend
namespaces serving HTTPS /readyz on :6443. Connections to the VIP reach the
live backends; a backend that stops answering is dropped within seconds and
comes back when it recovers; --cleanup leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
AGENT_SRC = REPO / "images" / "kubernetes" / "vip-agent"
VIP = "10.103.97.2"

SERVER = r"""
import http.server, ssl, sys
name, cert, key = sys.argv[1:4]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = name.encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("0.0.0.0", 6443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft (network namespaces, nftables)")
    out = tmp_path_factory.mktemp("vip") / "kbuild-vip"
    subprocess.run(
        ["go", "build", "-o", str(out), "."], cwd=AGENT_SRC, check=True, capture_output=True,
        timeout=300, env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    return out


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[dict[str, str]]:
    """client namespace + backends b1 (10.77.1.2) and b2 (10.77.2.2), each on a veth pair."""
    tag = uuid.uuid4().hex[:6]
    names = {"c": f"kbv-c-{tag}", "b1": f"kbv-1-{tag}", "b2": f"kbv-2-{tag}"}
    try:
        for ns in names.values():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for i, b in ((1, "b1"), (2, "b2")):
            c_if, b_if = f"kvc{i}{tag}", f"kvb{i}{tag}"
            _ip("link", "add", c_if, "netns", names["c"], "type", "veth", "peer", "name", b_if,
                "netns", names[b])  # fmt: skip
            _ip("-n", names["c"], "addr", "add", f"10.77.{i}.1/30", "dev", c_if)
            _ip("-n", names[b], "addr", "add", f"10.77.{i}.2/30", "dev", b_if)
            _ip("-n", names["c"], "link", "set", c_if, "up")
            _ip("-n", names[b], "link", "set", b_if, "up")
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "pids", ns], capture_output=True, check=False)
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  check=False).stdout.split()  # fmt: skip
            for pid in pids:
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _cert(tmp_path: Path) -> tuple[Path, Path]:
    from kbuild.runtime.drivers.kubernetes.pki import generate_ca, issue_server_cert

    ca = generate_ca("test CA")
    pair = issue_server_cert(ca, "apiserver", dns_names=["apiserver"],
                             ip_addresses=["10.77.1.2", "10.77.2.2"])  # fmt: skip
    return pair.write(tmp_path, "server")


def _wait(what: str, fn: Callable[[], bool], timeout: float = 20) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if fn():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_vip_follows_the_live_backends(agent: Path, netns: dict[str, str],
                                       tmp_path: Path) -> None:  # fmt: skip
    crt, key = _cert(tmp_path)
    servers: dict[str, subprocess.Popen[bytes]] = {}

    def serve(b: str) -> None:
        servers[b] = subprocess.Popen(
            ["ip", "netns", "exec", netns[b], sys.executable, "-c", SERVER, b, str(crt), str(key)]
        )

    serve("b1")
    serve("b2")
    backends = tmp_path / "backends"
    backends.write_text("# masters\n10.77.1.2\n10.77.2.2\n")
    status = tmp_path / "status.json"
    ns = ["ip", "netns", "exec", netns["c"]]
    run = subprocess.Popen([*ns, str(agent), "--vip", VIP, "--backends", str(backends),
                            "--status", str(status), "--interval", "500ms",
                            "--timeout", "500ms"])  # fmt: skip
    unverified = ssl._create_unverified_context()

    def ask() -> str:
        code = ("import ssl,sys,urllib.request;c=ssl._create_unverified_context();"
                f"print(urllib.request.urlopen('https://{VIP}:6443/readyz',context=c,"
                "timeout=2).read().decode())")  # fmt: skip
        res = subprocess.run([*ns, sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=30, check=False)  # fmt: skip
        return res.stdout.strip()

    def healthy() -> list[str]:
        try:
            return list(json.loads(status.read_text())["programmed"])
        except (OSError, ValueError):
            return []

    try:
        assert unverified is not None
        _wait("both backends programmed", lambda: healthy() == ["10.77.1.2", "10.77.2.2"])
        seen = {ask() for _ in range(12)}
        assert seen == {"b1", "b2"}
        probe = [*ns, str(agent), "--vip", VIP, "--probe"]
        assert subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
        servers["b1"].kill()
        servers["b1"].wait()
        took = _wait("b1 dropped", lambda: healthy() == ["10.77.2.2"])
        assert took < 5
        assert {ask() for _ in range(6)} == {"b2"}
        serve("b1")
        _wait("b1 back", lambda: healthy() == ["10.77.1.2", "10.77.2.2"])
        # a backend leaving the file (a master deleted) leaves the rules at once
        backends.write_text("10.77.2.2\n")
        _wait("the file followed", lambda: healthy() == ["10.77.2.2"])
    finally:
        run.terminate()
        run.wait(10)
        for p in servers.values():
            p.kill()
            p.wait()
    rules = subprocess.run([*ns, "nft", "list", "ruleset"], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    assert "kbuild-vip" in rules  # a stopped agent keeps the rules
    subprocess.run([*ns, str(agent), "--vip", VIP, "--cleanup", "--status", str(status)],
                   check=True, timeout=30)  # fmt: skip
    rules = subprocess.run([*ns, "nft", "list", "ruleset"], capture_output=True, text=True,
                           check=True).stdout  # fmt: skip
    addrs = subprocess.run([*ns, "ip", "-o", "addr", "show", "dev", "lo"], capture_output=True,
                           text=True, check=True).stdout  # fmt: skip
    assert "kbuild-vip" not in rules and VIP not in addrs
    assert subprocess.run(probe, capture_output=True, timeout=30).returncode != 0
