"""SSH layer parts that need no host: known_hosts, command wrapping, parallel helper."""

from __future__ import annotations

import subprocess
import threading
import time

import paramiko
import pytest

from kbuild.errors import HostError, HostKeyError, HostsError, UsageError
from kbuild.runtime.cmdline import wrap_command
from kbuild.runtime.executor import Credentials
from kbuild.runtime.hostkeys import KnownHosts, fingerprint, host_entry_name
from kbuild.runtime.output import TAIL_LINES, OutputCollector
from kbuild.runtime.pool import is_local_address, run_on_hosts


def test_known_hosts_trust_on_first_use(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sub" / "known_hosts"
    kh = KnownHosts(path)
    k1 = paramiko.ECDSAKey.generate()
    k2 = paramiko.ECDSAKey.generate()
    assert kh.check("10.0.0.1", 22, k1) == "added"
    assert oct(path.stat().st_mode)[-3:] == "600"
    assert kh.check("10.0.0.1", 22, k1) == "known"
    # Another port is another entry.
    assert kh.check("10.0.0.1", 2222, k2) == "added"
    assert "[10.0.0.1]:2222 " in path.read_text()
    with pytest.raises(HostKeyError) as info:
        KnownHosts(path).check("10.0.0.1", 22, k2, name="master0")
    msg = str(info.value)
    assert msg.startswith("master0: the host key changed") and fingerprint(k2) in msg
    assert info.value.host == "master0"
    assert KnownHosts(path).check("10.0.0.1", 22, k1) == "known"  # unchanged by the refusal
    assert KnownHosts(path).check("10.0.0.1", 22, k2, accept_changed=True) == "replaced"
    assert KnownHosts(path).check("10.0.0.1", 22, k2) == "known"
    with pytest.raises(HostKeyError):
        KnownHosts(path).check("10.0.0.1", 22, k1)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and sum(line.startswith("10.0.0.1 ") for line in lines) == 1


def test_known_hosts_other_key_type_counts_as_changed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    kh = KnownHosts(tmp_path / "kh")
    kh.check("h", 22, paramiko.ECDSAKey.generate())
    assert kh.known_types("h") == ["ecdsa-sha2-nistp256"]
    with pytest.raises(HostKeyError):
        kh.check("h", 22, paramiko.RSAKey.generate(1024))
    kh.forget("h")
    assert kh.known_types("h") == []


def test_known_hosts_parallel_writers_lose_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "kh"
    keys = [paramiko.ECDSAKey.generate() for _ in range(12)]

    def add(i: int) -> None:
        KnownHosts(path).check(f"10.1.0.{i}", 22, keys[i])

    threads = [threading.Thread(target=add, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(path.read_text().splitlines()) == 12


def test_host_entry_name() -> None:
    assert host_entry_name("1.2.3.4", 22) == "1.2.3.4"
    assert host_entry_name("1.2.3.4", 2200) == "[1.2.3.4]:2200"


def test_wrap_command() -> None:
    assert wrap_command("ls /", is_root=True, sudo=True, sudo_password=False, env=None) == (
        "ls /", b""
    )
    line, prefix = wrap_command("echo 'a b'", is_root=False, sudo=True, sudo_password=True,
                                env=None)  # fmt: skip
    assert line == "sudo -k -S -p '' -- sh -c 'echo '\"'\"'a b'\"'\"''" and prefix == b""
    line, _ = wrap_command("id", is_root=False, sudo=True, sudo_password=False, env=None)
    assert line.startswith("sudo -n -- sh -c ")
    assert wrap_command("id", is_root=False, sudo=False, sudo_password=True, env=None)[0] == "id"
    with pytest.raises(UsageError):
        wrap_command("x", is_root=True, sudo=True, sudo_password=False, env={"A-B": "1"})


def test_env_travels_on_stdin_never_on_the_command_line() -> None:
    """Secrets in the environment are not in the command line (``/proc/*/cmdline``
    is world-readable); the command still sees them, and its own stdin follows."""
    env = {"TOKEN": "s3cr3t-'quoted' $(no) \n line2", "B": ""}
    line, prefix = wrap_command(
        'printf "%s|%s|" "$TOKEN" "$B"; cat', is_root=True, sudo=True, sudo_password=False,
        env=env,
    )  # fmt: skip
    assert "s3cr3t" not in line
    proc = subprocess.run(
        ["sh", "-c", line], input=prefix + b"own stdin", capture_output=True, check=True
    )
    assert proc.stdout.decode() == env["TOKEN"] + "||own stdin"


def test_credentials_repr_hides_secrets() -> None:
    c = Credentials(user="u", password="hunter2-pw", key_file="/k", passphrase="pp-secret")
    assert "hunter2-pw" not in repr(c) and "pp-secret" not in repr(c) and "/k" in repr(c)


def test_run_on_hosts_parallel_bounded_and_aggregated() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def work(h: str) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with lock:
            active -= 1
        if h in ("b", "d"):
            raise HostError(h, "boom", exit_status=3)
        return h.upper()

    start = time.monotonic()
    res = run_on_hosts(list("abcdef"), work, max_workers=3, check=False)
    assert 0.35 < time.monotonic() - start < 1.5 and peak == 3
    assert res.results == {"a": "A", "c": "C", "e": "E", "f": "F"}
    assert set(res.errors) == {"b", "d"}
    with pytest.raises(HostsError) as info:
        res.raise_for_errors()
    assert info.value.host == "b, d" and "2 hosts failed" in str(info.value)
    assert "b: boom" in str(info.value) and "exit status: 3" in str(info.value)


def test_run_on_hosts_reraises_bugs() -> None:
    def bad(h: str) -> None:
        raise ZeroDivisionError(h)

    with pytest.raises(ZeroDivisionError):
        run_on_hosts(["x", "y"], bad)
    assert run_on_hosts([], bad).results == {}


def test_is_local_address() -> None:
    assert is_local_address("localhost") and is_local_address("127.0.0.1")
    assert is_local_address("::1")
    assert not is_local_address("203.0.113.7")  # TEST-NET-3: never ours; binding only
    assert not is_local_address("not-an-ip.example")


def test_output_tail_keeps_last_stderr_when_stdout_arrives_after_it() -> None:
    seen: list[tuple[str, str, str]] = []
    out = OutputCollector("m0", lambda h, st, line: seen.append((h, st, line)))
    out.feed("stdout", b"".join(b"o%d\n" % i for i in range(5)))
    out.feed("stderr", b"why it failed\n")
    out.feed("stdout", b"".join(b"o%d\n" % i for i in range(5, 60)))
    out.feed("stdout", b"no newline")
    out.finish()
    tail = out.tail_text().splitlines()
    assert tail[0] == "why it failed"
    assert tail[1:] == [f"o{i}" for i in range(41, 60)] + ["no newline"]
    assert len(tail) == TAIL_LINES + 1
    assert seen[5] == ("m0", "stderr", "why it failed") and len(seen) == 62
    assert out.text("stderr") == "why it failed\n"
