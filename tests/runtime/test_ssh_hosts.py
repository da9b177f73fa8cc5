"""SSH against real hosts: podman containers with systemd and sshd."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

import pytest

from kbuild.errors import HostError, HostKeyError, HostsError
from kbuild.runtime.executor import Credentials
from kbuild.runtime.local import LocalConnection
from kbuild.runtime.pool import ConnectionPool, connect, is_local_address, run_on_hosts
from kbuild.runtime.providers import podman
from kbuild.runtime.ssh import Connection
from tests.fixtures.hosts import FLAVOURS, HostSet

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hosts(podman_hosts) -> HostSet:  # type: ignore[no-untyped-def]
    return podman_hosts(3)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_login_flavour_runs_as_its_user_and_as_root(hosts: HostSet, flavour: str) -> None:
    host = hosts[0]
    with hosts.connect(host, flavour) as conn:
        me = conn.run("id -un", sudo=False).stdout.strip()
        assert me == ("kbuser" if flavour == "sudo-password" else "root")
        assert conn.run("id -un").stdout.strip() == "root"
        assert conn.run("cat /etc/hostname").stdout.strip() == host.name


def test_sudo_keeps_stdin_intact_and_password_out_of_sight(hosts: HostSet) -> None:
    host = hosts[1]
    secret = host.user_password
    with hosts.connect(host, "sudo-password") as conn, hosts.connect(host) as root:
        # The command's stdin is exactly what the caller gave, nothing of sudo's.
        data = b"line one\nline two\n\x00\xff binary"
        assert conn.run("cat", stdin=data).stdout.encode("latin-1", "replace")[:8] == b"line one"
        got = conn.run("sha256sum", stdin=data).stdout.split()[0]
        assert got == hashlib.sha256(data).hexdigest()
        # While a sudo command runs, the password is in no process's arguments
        # or environment.
        proc = conn.open_exec("sleep 3")
        try:
            time.sleep(0.8)
            ps = root.run("ps -eo args; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'")
            assert "sleep 3" in ps.stdout
            assert secret not in ps.stdout
        finally:
            proc.kill()
        with pytest.raises(HostError) as info:
            conn.run("echo visible; false")
        assert secret not in str(info.value)
        assert "visible" in str(info.value)


def test_wrong_sudo_password_is_a_clear_error(hosts: HostSet) -> None:
    host = hosts[1]
    creds = Credentials(user="kbuser", key_file=str(host.key_file), password="not-the-password")
    conn = Connection(host.ip, creds, name=host.name, known_hosts=hosts.known_hosts)
    with conn:
        assert conn.run("id -un", sudo=False).stdout.strip() == "kbuser"
        with pytest.raises(HostError) as info:
            conn.run("id -un")
    text = str(info.value)
    assert host.name in text and "sudo" in text and "not accepted" in text
    assert "not-the-password" not in text


def test_failing_command_names_host_command_status_and_last_lines(hosts: HostSet) -> None:
    host = hosts[0]
    with hosts.connect(host) as conn:
        cmd = "for i in $(seq 1 30); do echo out$i; done; echo bad >&2; exit 7"
        with pytest.raises(HostError) as info:
            conn.run(cmd)
        err = info.value
        assert err.host == host.name and err.exit_status == 7 and err.command == cmd
        tail = err.output_tail.splitlines()
        # stdout and stderr travel separately, so "bad" may arrive before some
        # stdout lines; it stays in the tail either way, with the last stdout.
        assert "bad" in tail
        assert [line for line in tail if line != "bad"][-19:] == [f"out{i}" for i in range(12, 31)]
        assert "out10" not in tail
        res = conn.run("exit 3", check=False)
        assert res.exit_status == 3 and not res.ok


def test_output_is_streamed_per_line_with_host_and_stream(hosts: HostSet) -> None:
    host = hosts[2]
    seen: list[tuple[str, str, str, float]] = []
    with hosts.connect(host) as conn:
        start = time.monotonic()
        conn.run(
            "echo first; sleep 1; echo second >&2; printf tail",
            on_output=lambda h, s, line: seen.append((h, s, line, time.monotonic() - start)),
        )
    assert [(h, s, line) for h, s, line, _ in seen] == [
        (host.name, "stdout", "first"),
        (host.name, "stderr", "second"),
        (host.name, "stdout", "tail"),
    ]
    # "first" arrived before the command ended: streamed, not buffered.
    assert seen[0][3] < 0.9 <= seen[1][3]


def test_one_transport_reused_and_channels_in_parallel(hosts: HostSet) -> None:
    host = hosts[0]
    with hosts.connect(host) as conn:
        transport = conn._transport
        for i in range(5):
            assert conn.run(f"echo {i}").stdout == f"{i}\n"
        assert conn._transport is transport
        results: list[float] = []

        def sleeper() -> None:
            t = time.monotonic()
            conn.run("sleep 1")
            results.append(time.monotonic() - t)

        start = time.monotonic()
        threads = [threading.Thread(target=sleeper) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 4 and time.monotonic() - start < 3.0
        assert conn._transport is transport


def test_command_timeout_is_bounded(hosts: HostSet) -> None:
    with hosts.connect(hosts[0]) as conn:
        start = time.monotonic()
        with pytest.raises(HostError, match="did not finish within 1 s"):
            conn.run("echo started; sleep 30", timeout=1)
        assert time.monotonic() - start < 5
        assert conn.run("echo still usable").ok


@pytest.mark.parametrize("flavour", ["root-password", "sudo-password"])
def test_stream_bytes_arrive_intact(hosts: HostSet, flavour: str) -> None:
    data = os.urandom(1 << 20) * 48 + os.urandom(12345)
    sent: list[int] = []
    with hosts.connect(hosts[2], flavour) as conn:
        res = conn.run_with_input(
            "sha256sum; ", io.BytesIO(data), progress=sent.append, chunk_size=1 << 20
        )
        assert res.stdout.split()[0] == hashlib.sha256(data).hexdigest()
        assert sum(sent) == len(data)
        # open_exec: the caller writes the stream itself.
        with conn.open_exec("cat > /tmp/stream.bin && sha256sum /tmp/stream.bin") as proc:
            for i in range(0, len(data), 1 << 20):
                proc.write(data[i : i + (1 << 20)])
            proc.close_stdin()
            out = proc.wait(timeout=60)
        assert out.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_stream_throughput_sanity(hosts: HostSet) -> None:
    data = os.urandom(1 << 20) * 128
    with hosts.connect(hosts[1]) as conn:
        start = time.monotonic()
        res = conn.run_with_input("cat > /dev/null; echo done", io.BytesIO(data))
        seconds = time.monotonic() - start
    assert res.stdout == "done\n"
    rate = len(data) / seconds / 1e6
    # ~120 MB/s measured here; far lower means small windows/packets or a slow cipher.
    assert rate > 30, f"{rate:.0f} MB/s"


def test_command_that_stops_reading_fails_the_writer(hosts: HostSet) -> None:
    with hosts.connect(hosts[1]) as conn, pytest.raises(HostError) as info:
        conn.run_with_input("head -c 10 >/dev/null; echo gave-up >&2; exit 4",
                            io.BytesIO(os.urandom(1 << 20) * 64))  # fmt: skip
    assert info.value.exit_status == 4
    assert "gave-up" in info.value.output_tail


def test_run_on_hosts_in_parallel_and_errors_aggregated(hosts: HostSet) -> None:
    with hosts.pool() as pool:
        conns = [pool.get(h.ip, h.credentials(), name=h.name) for h in hosts]
        start = time.monotonic()
        res = run_on_hosts(conns, lambda c: c.run("sleep 1; hostname").stdout.strip())
        assert time.monotonic() - start < 2.5
        assert res.results == {h.name: h.name for h in hosts}
        assert pool.get(hosts[0].ip, hosts[0].credentials()) is conns[0]
        with pytest.raises(HostsError) as info:
            run_on_hosts(conns, lambda c: c.run("test $(hostname) = h0"))
        assert sorted(info.value.errors) == ["h1", "h2"]
        assert "h1" in str(info.value) and "h2" in str(info.value)
        one = run_on_hosts(conns, lambda c: c.run("test $(hostname) = h0"), check=False)
        assert set(one.results) == {"h0"} and set(one.errors) == {"h1", "h2"}
        with pytest.raises(HostError) as single:
            run_on_hosts(conns, lambda c: c.run("test $(hostname) != h2"))
        assert not isinstance(single.value, HostsError) and single.value.host == "h2"


def test_wrong_password_is_a_clear_bounded_error(hosts: HostSet) -> None:
    host = hosts[0]
    conn = Connection(host.ip, Credentials(password="wrong-pw-123"), name=host.name,
                      known_hosts=hosts.known_hosts)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(HostError) as info:
        conn.connect()
    assert time.monotonic() - start < 15
    text = str(info.value)
    assert "authentication failed for user root" in text and host.name in text
    assert "wrong-pw-123" not in text


def test_key_passphrase_wrong_or_missing(hosts: HostSet) -> None:
    host = hosts[0]
    for pp, expect in ((None, "is encrypted"), ("nope", "wrong passphrase")):
        creds = Credentials(key_file=str(host.enc_key_file), passphrase=pp)
        with pytest.raises(HostError, match=expect) as info:
            Connection(host.ip, creds, known_hosts=hosts.known_hosts).connect()
        assert host.passphrase not in str(info.value)


def test_trust_on_first_use_and_changed_host_key(hosts: HostSet, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host = hosts[2]
    kh = tmp_path / "kbuild" / "known_hosts"
    with Connection(host.ip, host.credentials(), known_hosts=kh) as c:
        c.run("true")
    first = kh.read_text()
    assert first.startswith(host.ip + " ssh-ed25519 ") and oct(kh.stat().st_mode)[-3:] == "600"
    with Connection(host.ip, host.credentials(), known_hosts=kh) as c:
        c.run("true")
    assert kh.read_text() == first
    # The host is "reinstalled": new host keys.
    with Connection(host.ip, host.credentials(), known_hosts=kh) as c:
        c.run("rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh")
    with pytest.raises(HostKeyError) as info:
        Connection(host.ip, host.credentials(), known_hosts=kh, name=host.name).connect()
    assert "host key changed" in str(info.value) and host.name in str(info.value)
    assert info.value.hint and "--accept-changed-host-key" in info.value.hint
    assert kh.read_text() == first
    with Connection(host.ip, host.credentials(), known_hosts=kh,
                    accept_changed_host_key=True) as c:  # fmt: skip
        c.run("true")
    second = kh.read_text()
    assert second != first and second.count("\n") == 1
    with Connection(host.ip, host.credentials(), known_hosts=kh) as c:
        c.run("true")
    # Keep the module's own known_hosts in step for later tests.
    Connection(host.ip, host.credentials(), known_hosts=hosts.known_hosts,
               accept_changed_host_key=True).connect().close()  # fmt: skip


def test_unused_address_in_test_network_fails_in_bounded_time(hosts: HostSet) -> None:
    subnet = podman.network_subnet(hosts.cluster)
    unused = str(subnet.network_address + 250)
    assert unused not in {h.ip for h in hosts}
    conn = Connection(unused, Credentials(password="x"), name="ghost",
                      known_hosts=hosts.known_hosts, connect_timeout=2, retries=2,
                      retry_delay=0.5)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(HostError) as info:
        conn.run("true")
    took = time.monotonic() - start
    assert took < 10, took
    text = str(info.value)
    assert text.startswith("ghost: cannot connect to " + unused + ":22") and "2 attempts" in text


def test_stopped_host_is_a_clear_error_and_comes_back(podman_hosts) -> None:  # type: ignore[no-untyped-def]
    hs = podman_hosts(1)
    host = hs[0]
    podman.stop_host(host.container)
    conn = Connection(host.ip, host.credentials(), name=host.name, known_hosts=hs.known_hosts,
                      connect_timeout=2, retries=2, retry_delay=0.5)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(HostError, match="cannot connect"):
        conn.connect()
    assert time.monotonic() - start < 10


def test_local_connection_same_api(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = connect("127.0.0.1")
    assert isinstance(conn, LocalConnection)
    assert isinstance(ConnectionPool(known_hosts=tmp_path / "kh").get("localhost"),
                      LocalConnection)  # fmt: skip
    assert conn.run("echo $((6*7))").stdout == "42\n"
    assert conn.run("id -u").stdout.strip() == str(os.getuid())
    assert conn.run("cat", stdin="abc").stdout == "abc"
    assert conn.run("echo $K", env={"K": "a b'c"}).stdout == "a b'c\n"
    data = os.urandom(3 << 20)
    res = conn.run_with_input("sha256sum", io.BytesIO(data))
    assert res.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    with pytest.raises(HostError) as info:
        conn.run("echo x; exit 5")
    assert info.value.exit_status == 5 and info.value.host == "127.0.0.1"
    start = time.monotonic()
    with pytest.raises(HostError, match="did not finish"):
        conn.run("sleep 20", timeout=0.5)
    assert time.monotonic() - start < 3
    lines: list[tuple[str, str, str]] = []
    conn.run("echo a; echo b >&2", on_output=lambda *a: lines.append(a))
    assert sorted(lines) == [("127.0.0.1", "stderr", "b"), ("127.0.0.1", "stdout", "a")]
    assert isinstance(connect("::1"), LocalConnection)


def test_local_address_detection(hosts: HostSet) -> None:
    gateway = str(podman.network_subnet(hosts.cluster).network_address + 1)
    assert is_local_address(gateway)  # this machine's end of the test network
    assert is_local_address("localhost") and is_local_address("127.0.0.5")
    assert not any(is_local_address(h.ip) for h in hosts)
    assert isinstance(connect(hosts[0].ip, hosts[0].credentials(),
                              known_hosts=hosts.known_hosts), Connection)  # fmt: skip


def test_nopasswd_sudo_user_gets_no_password_in_stdin(hosts: HostSet) -> None:
    host = hosts[2]
    with hosts.connect(host) as root:
        root.run("id -u nopw >/dev/null 2>&1 || useradd -m -s /bin/sh nopw; "
                 "echo 'nopw ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nopw; "
                 "chmod 0440 /etc/sudoers.d/nopw; chpasswd",
                 stdin="nopw:nopw-pass-1\n")
    creds = Credentials(user="nopw", password="nopw-pass-1")
    with Connection(host.ip, creds, known_hosts=hosts.known_hosts, name=host.name) as conn:
        data = os.urandom(200_000)
        res = conn.run("sha256sum; id -un", stdin=data)
        assert res.stdout.split() == [hashlib.sha256(data).hexdigest(), "-", "root"]


def test_connection_lost_is_named_and_next_command_reconnects(hosts: HostSet) -> None:
    host = hosts[0]
    with hosts.connect(host) as conn:
        sshd = conn.run("echo $PPID").stdout.strip()
        with pytest.raises(HostError) as info:
            conn.run(f"kill -9 {sshd}; sleep 5", timeout=20)
        assert "connection was lost" in str(info.value) or info.value.exit_status == 255
        assert conn.run("hostname").stdout.strip() == host.name


def test_large_stdin_reaches_the_command_whole(hosts: HostSet) -> None:
    data = os.urandom(6 << 20)
    want = hashlib.sha256(data).hexdigest()
    for flavour in ("root-password", "sudo-password"):
        with hosts.connect(hosts[1], flavour) as conn:
            assert conn.run("sha256sum", stdin=data, timeout=60).stdout.split()[0] == want
    local = connect("localhost")
    assert local.run("sha256sum", stdin=data, timeout=60).stdout.split()[0] == want
