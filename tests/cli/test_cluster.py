"""The cluster commands' handling of user mistakes (no hosts needed).

The end-to-end behaviour of run/join/delete/apply/exec against real hosts is
in tests/runtime/test_lifecycle_e2e.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from kbuild.runtime import clusterfile as cfmod
from tests.cli.conftest import Outcome


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run"], "give an IMAGE"),
        (["run", "img:1", "--provider", "podman", "--masters", "10.0.0.1"], "number of hosts"),
        (["run", "img:1", "--dry-run"], "podman hosts are made by a real run"),
        (["run", "img:1", "--masters", "10.0.0.1", "-f", "Clusterfile"], "not both"),
        (["run", "img:1", "--masters", "10.0.0.1,bad"], "--masters: bad IP address: 'bad'"),
        (["run", "img:1", "--masters", "10.0.0.1", "--nodes", "10.0.0.1"], "duplicate IP"),
        (["run", "img:1", "--masters", "10.0.0.1", "-e", "NOVALUE"], "expected KEY=VALUE"),
        (["delete"], "either --all or the hosts"),
        (["delete", "--all", "--nodes", "10.0.0.1"], "either --all or the hosts"),
        (["join"], "--masters and/or --nodes"),
    ],
)
def test_usage_errors_exit_2_without_traceback(
    cli: Callable[..., Outcome], tmp_path: Path, args: list[str], fragment: str
) -> None:
    (tmp_path / "Clusterfile").write_text("kind: Cluster\n")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        proc = cli(*args)
    finally:
        os.chdir(cwd)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_bad_clusterfile_names_document_field_and_value(
    cli: Callable[..., Outcome], tmp_path: Path, dry_run: list[str]
) -> None:
    cf = tmp_path / "Clusterfile"
    cf.write_text(
        "kind: Cluster\nspec:\n  image: i:1\n  hosts: [{ips: [10.0.0.1], roles: [master]}]\n"
        "---\nkind: Plugin\nspec: {action: pre-nothing, data: x}\n"
    )
    proc = cli("run", "-f", str(cf), *dry_run)
    assert proc.returncode == 2
    assert (
        f"{cf}: document 2 (kind Plugin): spec.action: unknown action: 'pre-nothing'" in proc.stderr
    )


def test_missing_image_is_reported_before_any_host_is_touched(
    cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    # 127.0.0.1 port 1: nothing listens; the image check must not even get there
    proc = cli("run", "nosuch:1", "--masters", "127.0.0.1", "--port", "1",
                   "--passwd", "pw-secret-1", "--progress", "plain")  # fmt: skip
    assert proc.returncode != 0
    assert "pw-secret-1" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_commands_on_a_cluster_that_is_not_recorded(
    cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    proc = cli("exec", "--", "true")
    assert proc.returncode == 1
    assert "no cluster is recorded" in proc.stderr
    proc = cli("delete", "--nodes", "10.0.0.9", "--cluster-name", "x")
    assert "no cluster named 'x' is recorded" in proc.stderr


def test_delete_refuses_master0_and_unknown_hosts(
    cli: Callable[..., Outcome], tmp_path: Path
) -> None:
    sdir = tmp_path / "state" / "c1"
    sdir.mkdir(parents=True)
    cfmod.save(cfmod.from_flags("i:1", masters=["10.0.0.1"], nodes=["10.0.0.2"], cluster_name="c1"),
               sdir / "Clusterfile")  # fmt: skip
    proc = cli("delete", "--masters", "10.0.0.1")
    assert proc.returncode == 1 and "10.0.0.1 is master0 of cluster c1" in proc.stderr
    assert "delete --all" in proc.stderr
    proc = cli("delete", "--nodes", "10.0.0.7")
    assert "cluster c1 has no host 10.0.0.7" in proc.stderr


def test_help_lists_the_cluster_commands(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    out = cli("--help").stdout
    for name in ("run", "join", "delete", "apply", "exec"):
        assert f"  {name} " in out


def test_renderers_show_hosts_status_bytes_and_output() -> None:
    import io

    from rich.console import Console

    from kbuild.cli.progress import RichRenderer
    from kbuild.runtime.runevents import BytesSent, HostOutput, HostStatus, PhaseStarted

    events = [
        PhaseStarted("init-host", ("10.0.0.1", "10.0.0.2")),
        HostStatus("10.0.0.1", "sending", "layer 1/1"),
        BytesSent("10.0.0.1", "sha256:" + "a" * 64, 1_000_000, 2_000_000),
        BytesSent("10.0.0.1", "sha256:" + "a" * 64, 2_000_000, 2_000_000),
        HostOutput("10.0.0.2", "stdout", "service started"),
        HostStatus("10.0.0.2", "done"),
    ]
    buf = io.StringIO()
    rich = RichRenderer(Console(file=buf, force_terminal=True, width=100))
    for e in events:
        rich(e)
    rich.close()
    text = buf.getvalue()
    for fragment in ("10.0.0.1", "sending layer 1/1", "2.0 MB", "service started", "done"):
        assert fragment in text
    assert rich.sent == {"10.0.0.1": 2_000_000}


def test_plain_renderer_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from kbuild.cli.progress import PlainRenderer
    from kbuild.runtime.runevents import BytesSent, HostOutput, HostStatus

    r = PlainRenderer()
    r(HostStatus("10.0.0.1", "mounted", "/d/c/rootfs"))
    r(BytesSent("10.0.0.1", "sha256:" + "b" * 64, 10, 20))
    r(BytesSent("10.0.0.1", "sha256:" + "b" * 64, 20, 20))
    r(HostOutput("10.0.0.2", "stderr", "oops"))
    assert capsys.readouterr().err.splitlines() == [
        "[10.0.0.1] mounted: /d/c/rootfs",
        f"[10.0.0.1] sent {'b' * 12} 20 B",
        "[10.0.0.2] | oops",
    ]


def test_rich_display_prints_host_output_as_text() -> None:
    """A host line with ``[/]`` raised in the output thread (rich markup) and
    stopped the display; kubeadm's ``[preflight]`` prefixes vanished."""
    import io

    from rich.console import Console

    from kbuild.cli.progress import RichRenderer
    from kbuild.runtime.runevents import HostOutput, Message

    buf = io.StringIO()
    display = RichRenderer(Console(file=buf, force_terminal=True, width=200))
    display(HostOutput("10.0.0.2", "stdout", "[preflight] Running pre-flight checks"))
    display(HostOutput("10.0.0.2", "stdout", "a [/] b [bold]c"))
    display(Message("note [/]"))
    display.close()
    text = buf.getvalue()
    assert "[preflight] Running pre-flight checks" in text
    assert "a [/] b [bold]c" in text and "note [/]" in text


def test_exec_words_stay_words(cli: Callable[..., Outcome], tmp_path: Path) -> None:
    """``kbuild exec -- ls "/a b"`` joined the words with spaces (it listed
    ``/a`` and ``b``); one word stays a shell command line."""
    from kbuild.runtime.state import StateDir

    target = tmp_path / "a b"
    target.mkdir()
    (target / "inside").write_text("x")
    cf = cfmod.from_flags("x:1", masters=["127.0.0.1"], cluster_name="local")
    StateDir("local", tmp_path / "state").save_clusterfile(cf)
    listed = cli("exec", "--cluster-name", "local", "--", "ls", str(target))
    assert listed.returncode == 0, listed.stderr
    assert "inside" in listed.stdout
    line = cli("exec", "--cluster-name", "local", "--", f"ls '{target}' && echo both")
    assert "inside" in line.stdout and "both" in line.stdout


def test_ssh_password_ways(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                           cli: Callable[..., Outcome]) -> None:  # fmt: skip
    """The SSH password could only be given as --passwd (shell history, ps)."""
    import io

    from kbuild.cli.cluster import ssh_password

    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert ssh_password(None, False, str(secret)) == "from-file"
    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    assert ssh_password(None, True, None) == "from-stdin"
    monkeypatch.setenv("KBUILD_SSH_PASSWORD", "from-env")
    assert ssh_password(None, False, None) == "from-env"
    assert ssh_password("flag", False, None) == "flag"
    both = cli("run", "x:1", "--masters", "10.0.0.1", "--passwd", "a", "--passwd-file", str(secret))
    assert both.returncode == 2 and "one way" in both.stderr
    missing = cli("run", "x:1", "--masters", "10.0.0.1", "--passwd-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read it" in missing.stderr
