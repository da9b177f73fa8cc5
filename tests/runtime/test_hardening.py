"""Issue 15, "Injection and host safety" and "Secrets" on the runtime side:
values that reach hosts go through one allow-list per kind, commands are quoted
by construction, secrets stay off command lines and out of output.

Each test here fails on the code before the hardening (see the finding it
names)."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kbuild.errors import ClusterfileError, HostError
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime.contract import run_script
from kbuild.runtime.local import LocalConnection
from kbuild.runtime.mount import ClusterPaths, is_mounted
from kbuild.runtime.runevents import Event, HostOutput

CLUSTER = """\
apiVersion: sealer.io/v2
kind: Cluster
metadata: {{name: c}}
spec:
  image: x:1
  hosts:
    - {{ips: [10.0.0.1], roles: [master]}}
{extra}
"""


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        # dataRoot reached shell unquoted and may name a system directory
        ("  dataRoot: \"/srv/x'; touch /tmp/pwned; '\"", "spec.dataRoot: must be an absolute path"),
        ("  dataRoot: /srv/a b", "spec.dataRoot: must be an absolute path"),
        ("  dataRoot: /usr", "must not be inside the system directory /usr"),
        ("  dataRoot: /etc/kbuild", "must not be inside the system directory /etc"),
        ("  dataRoot: /var/lib", "not a shared one like /var/lib"),
        ("  dataRoot: /var/lib/kubelet/x", "inside the system directory /var/lib/kubelet"),
        # IPv6 zone ids with any text; one host in two spellings
        ("    - {ips: ['fe80::1%eth0; reboot'], roles: [node]}", "bad IPv6 zone"),
        ("    - {ips: ['::ffff:10.0.0.1'], roles: [node]}", "duplicate IP"),
        # arbitrary /etc/hosts lines through hostAliases
        ("  hostAliases: [{ip: 10.0.0.9, hostnames: [\"a\\n10.6.6.6 evil\"]}]", "bad host name"),
        # typos silently ignored before
        ("  hostz: []", "spec.hostz: unknown field (did you mean hosts?)"),
        # a YAML key that is a list gave a traceback
        ("  ? [a, b]\n  : 1", "a mapping key must be a plain value"),
    ],
)
def test_hostile_cluster_values_are_refused(extra: str, fragment: str) -> None:
    with pytest.raises(ClusterfileError) as info:
        cfmod.loads(CLUSTER.format(extra=extra), source="cf.yaml")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("kind: Config\nspec: {path: a.yaml, appName: ../../.., data: x}", "bad app name"),
        ("kind: Config\nspec: {path: a.yaml, stratgy: merge, data: 'a: 1'}",
         "spec.stratgy: unknown field (did you mean strategy?)"),
        ("kind: Plugin\nspec: {action: pre-install, scop: node, data: 'echo'}",
         "spec.scop: unknown field (did you mean scope?)"),
        ("kind: Config\nspec: {path: ../etc/passwd, data: x}", "clean relative path"),
    ],
)  # fmt: skip
def test_config_and_plugin_documents_are_strict(doc: str, fragment: str) -> None:
    text = CLUSTER.format(extra="") + "---\n" + doc + "\n"
    with pytest.raises(ClusterfileError) as info:
        cfmod.loads(text, source="cf.yaml")
    assert fragment in str(info.value)


def test_addresses_are_canonical() -> None:
    cf = cfmod.loads(CLUSTER.format(extra="    - {ips: ['::ffff:10.0.0.2', 'FE80::1%eth0'], "
                                          "roles: [node]}"))  # fmt: skip
    assert [h.ip for h in cf.cluster.all_hosts()] == ["10.0.0.1", "10.0.0.2", "fe80::1%eth0"]


@pytest.fixture
def hostile_root(tmp_path: Path) -> Iterator[ClusterPaths]:
    """A data root with a space, a quote and a command substitution in its name,
    with the cluster's rootfs overlay-mounted there."""
    if os.geteuid() != 0:
        pytest.skip("mounting an overlay needs root")
    data_root = tmp_path / "a b'$(touch pwned)"
    paths = ClusterPaths(str(data_root), "c")
    for d in ("lower", "upper", "work", "rootfs"):
        (data_root / "c" / d).mkdir(parents=True)
    opts = f"lowerdir={paths.lower},upperdir={paths.upper},workdir={paths.work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, paths.rootfs], check=True)
    try:
        yield paths
    finally:
        subprocess.run(["umount", "-l", paths.rootfs], check=False)


def test_mount_check_handles_any_data_root(hostile_root: ClusterPaths, tmp_path: Path) -> None:
    """is_mounted put the path inside single quotes of a grep: a quote ran
    commands, a space never matched (/proc/self/mounts writes \\040)."""
    conn = LocalConnection("local")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert is_mounted(conn, hostile_root)
        subprocess.run(["umount", hostile_root.rootfs], check=True)
        assert not is_mounted(conn, hostile_root)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_local_host_is_root_only_when_the_process_is() -> None:
    """A Clusterfile saying user root made a non-root kbuild run "as root"
    commands directly, as itself. Run as nobody (Debian's own python3: the
    modules involved need nothing outside the standard library)."""
    repo = Path(__file__).resolve().parents[2]
    code = (
        f"import sys; sys.path.insert(0, {str(repo)!r})\n"
        "from kbuild.runtime.local import LocalConnection\n"
        "from kbuild.runtime.executor import Credentials\n"
        "c = LocalConnection('h', Credentials(user='root'))\n"
        "r = c.run('id -u', check=False)\n"
        "print(c.is_root, r.exit_status, r.stdout.strip() or '-')\n"
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    out = subprocess.run(
        [*(nobody if os.geteuid() == 0 else []), "/usr/bin/python3", "-c", code],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.split()  # fmt: skip
    assert out[0] == "False"
    # through sudo, which nobody may not use: it fails, never "uid 65534 as root"
    assert out[1] != "0" and out[2] != "65534"


def _script_root(tmp_path: Path, script: str) -> ClusterPaths:
    paths = ClusterPaths(str(tmp_path / "d"), "c")
    scripts = Path(paths.rootfs) / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "join-cluster.sh").write_text(script)
    return paths


def test_export_lines_are_never_shown(tmp_path: Path) -> None:
    """join-cluster.sh's ``kbuild-export: KUBE_TOKEN=…`` lines reached the
    terminal and error messages."""
    paths = _script_root(tmp_path, "echo hello\necho kbuild-export: KUBE_TOKEN=s3cr3t.t0k3n\n")
    events: list[Event] = []
    _, out = run_script(LocalConnection("h"), paths, "join-cluster", {}, progress=events.append)
    shown = [e.line for e in events if isinstance(e, HostOutput)]
    assert shown == ["hello"]
    assert "s3cr3t.t0k3n" in out  # handed to join-host, in memory
    failing = _script_root(tmp_path / "f", "echo kbuild-export: KUBE_TOKEN=s3cr3t.t0k3n\nexit 3\n")
    with pytest.raises(HostError) as info:
        run_script(LocalConnection("h"), failing, "join-cluster", {})
    assert "s3cr3t" not in str(info.value)


def test_script_env_is_not_on_the_command_line(tmp_path: Path) -> None:
    """Env values went on the command line (``export K='v'; …``), readable in
    /proc/*/cmdline for the whole script."""
    paths = _script_root(tmp_path, "cat /proc/$$/cmdline | tr '\\0' ' '; echo; "
                                   "ps -eo args | grep -c hunter2-secret || true\n")  # fmt: skip
    _, out = run_script(LocalConnection("h"), paths, "join-cluster", {"PASS": "hunter2-secret"})
    cmdline, count = out.strip().splitlines()
    assert "hunter2-secret" not in cmdline
    assert count == "1"  # only the grep itself


def test_paramiko_prints_nothing_of_its_own(tmp_path: Path) -> None:
    """A port that answers without an SSH banner: paramiko's transport thread
    printed its own traceback before kbuild's error (in a plain process, where
    logging's last-resort handler writes to stderr)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 4000)
        conn.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    code = (
        "from kbuild.errors import HostError\n"
        "from kbuild.runtime.executor import Credentials\n"
        "from kbuild.runtime.ssh import Connection\n"
        f"c = Connection('127.0.0.1', Credentials(password='x', port={port}), retries=1,"
        " connect_timeout=5)\n"
        "try:\n    c.connect()\nexcept HostError as exc:\n    print('kbuild:', exc.message)\n"
    )
    proc = subprocess.run(
        ["python3", "-c", code], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    t.join(5)
    server.close()
    assert "cannot connect" in proc.stdout
    assert "Traceback" not in proc.stderr and "paramiko" not in proc.stderr.lower(), proc.stderr


_QUOTERS = {"quote", "q", "remote_script", "mounts_escape", "escape_path", "in_mounts"}


def _quoting(node: ast.expr) -> bool:
    """A call that quotes for the shell, or ``" ".join`` of such calls."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    if name in _QUOTERS:
        return True
    if name == "join" and isinstance(f, ast.Attribute):
        if isinstance(f.value, ast.Name) and f.value.id == "shlex":
            return True
        arg = node.args[0] if node.args else None
        return isinstance(arg, ast.GeneratorExp | ast.ListComp) and _quoting(arg.elt)
    return False


def unquoted_values(source: str) -> list[tuple[int, str]]:
    """Values put into a command for ``run``/``open_exec``/``run_with_input``
    without shell quoting: (line, expression)."""
    out: list[tuple[int, str]] = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef):
            continue
        quoted: set[str] = set()
        strings: dict[str, list[ast.JoinedStr]] = {}
        for n in ast.walk(fn):
            if isinstance(n, ast.Assign):
                for target in [t for t in n.targets if isinstance(t, ast.Name)]:
                    if _quoting(n.value):
                        quoted.add(target.id)
                    if isinstance(n.value, ast.JoinedStr):
                        strings.setdefault(target.id, []).append(n.value)
        for n in ast.walk(fn):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr in ("run", "open_exec", "run_with_input") and n.args):
                continue  # fmt: skip
            arg = n.args[0]
            commands = [arg] if isinstance(arg, ast.JoinedStr) else strings.get(
                arg.id if isinstance(arg, ast.Name) else "", [])  # fmt: skip
            for cmd in commands:
                for part in cmd.values:
                    if not isinstance(part, ast.FormattedValue):
                        continue
                    e = part.value
                    ok = _quoting(e) or isinstance(e, ast.Constant) or (
                        isinstance(e, ast.Name) and (e.id in quoted or e.id.isupper())) or (
                        isinstance(e, ast.Attribute) and e.attr.isupper())  # module constant
                    if not ok:
                        out.append((n.lineno, ast.unparse(e)))
    return out


def test_every_value_in_a_host_command_is_quoted() -> None:
    """Commands for hosts are built with shell quoting, so a new field cannot
    forget it: in the runtime, every value formatted into a command passed to
    run/open_exec/run_with_input is shlex-quoted (or a constant)."""
    runtime = Path(__file__).resolve().parents[2] / "kbuild" / "runtime"
    bad = [
        f"{p.relative_to(runtime)}:{line}: {expr}"
        for p in sorted(runtime.rglob("*.py"))
        for line, expr in unquoted_values(p.read_text())
    ]
    assert not bad, "\n".join(bad)


def test_the_quoting_check_sees_an_unquoted_value() -> None:
    src = (
        "def f(conn, path, name):\n"
        "    q = shlex.quote\n"
        "    ok = shlex.quote(name)\n"
        "    conn.run(f'cat {q(path)} {ok} {CONST}')\n"
        "    cmd = f'rm -rf {path}'\n"
        "    conn.run(cmd)\n"
        "    conn.run(f'ls {\" \".join(x for x in name)}')\n"
    )
    assert [e for _, e in unquoted_values(src)] == ["path", "' '.join((x for x in name))"]
