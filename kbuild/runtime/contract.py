"""The runtime contract between images and kbuild: scripts, plugins, launch commands, env.

Scripts of the image (all optional; run from the rootfs as root, through
their shebang when executable, else with ``sh``):

* ``scripts/init-host.sh``      every host, at run and join
* ``scripts/init-cluster.sh``   master0, once at run
* ``scripts/join-cluster.sh``   master0, before hosts join (at run: the hosts
  other than master0); lines ``kbuild-export: K=V`` it prints become
  environment of ``join-host.sh``
* ``scripts/join-host.sh``      every joining host (all but master0 at run)
* ``scripts/leave-cluster.sh``  master0, before hosts are deleted
* ``scripts/clean-host.sh``     every host being deleted
* ``scripts/clean-cluster.sh``  master0, at ``delete --all``
* ``scripts/upgrade-host.sh``   every host moving to a newer image of its kind
  (``kbuild upgrade``; the cluster driver says when and with what env)

Their environment: the image's ENV, under the Clusterfile env, under the host
env (names that are valid shell names), plus the ``KBUILD_*`` variables of
:func:`contract_env`.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass

from kbuild.errors import HostError
from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host, PluginDoc
from kbuild.runtime.executor import Executor, Result
from kbuild.runtime.mount import ClusterPaths
from kbuild.runtime.output import OutputCallback
from kbuild.runtime.runevents import HostOutput, PhaseDone, Progress, emit

_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXPORT_PREFIX = "kbuild-export: "
"""Lines a script prints to hand values to later scripts; never displayed."""

SCRIPTS = {
    phase: f"scripts/{phase}.sh"
    for phase in (
        titles.INIT_HOST,
        titles.INIT_CLUSTER,
        titles.JOIN_CLUSTER,
        titles.JOIN_HOST,
        titles.LEAVE_CLUSTER,
        titles.CLEAN_HOST,
        titles.CLEAN_CLUSTER,
        titles.UPGRADE_HOST,
    )
}
"""Contract phase name → script path in the rootfs."""


@dataclass(frozen=True)
class ClusterView:
    """What every phase's environment says about the cluster."""

    name: str
    image: str
    data_root: str
    masters: tuple[str, ...]
    nodes: tuple[str, ...]


def contract_env(view: ClusterView, host: Host, phase: str) -> dict[str, str]:
    """The ``KBUILD_*`` variables every script, plugin and template gets."""
    paths = ClusterPaths(view.data_root, view.name)
    return {
        "KBUILD_CLUSTER": view.name,
        "KBUILD_IMAGE": view.image,
        "KBUILD_DATA_ROOT": view.data_root,
        "KBUILD_ROOTFS": paths.rootfs,
        "KBUILD_HOST": host.ip,
        "KBUILD_ROLES": ",".join(host.roles),
        "KBUILD_MASTER0": view.masters[0] if view.masters else "",
        "KBUILD_MASTERS": ",".join(view.masters),
        "KBUILD_NODES": ",".join(view.nodes),
        "KBUILD_PHASE": phase,
    }


def host_env(
    image_env: Mapping[str, str], host: Host, view: ClusterView, phase: str
) -> dict[str, str]:
    """Image env < Clusterfile env (cluster, then host) < contract variables."""
    return {**image_env, **host.env, **contract_env(view, host, phase)}


def shell_env(env: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``env`` that a shell can export."""
    return {k: v for k, v in env.items() if _SHELL_NAME.match(k)}


def _output(progress: Progress | None) -> OutputCallback:
    def on_output(host: str, stream: str, line: str) -> None:
        if not line.startswith(EXPORT_PREFIX):
            emit(progress, HostOutput(host, stream, line))

    return on_output


def _run(
    conn: Executor, cmd: str, env: Mapping[str, str], *, what: str, command: str,
    stdin: str | None = None, progress: Progress | None = None,
) -> Result:  # fmt: skip
    """Run a contract command; a failure names host, what failed, its status and
    its last lines (never an export line: they may hold tokens)."""
    res = conn.run(cmd, check=False, stdin=stdin, env=shell_env(env), on_output=_output(progress))
    if res.exit_status != 0:
        lines = (res.stdout + res.stderr).strip().splitlines()
        tail = "\n".join([x for x in lines if not x.startswith(EXPORT_PREFIX)][-20:])
        raise HostError(
            conn.name, f"{what} failed", command=command, exit_status=res.exit_status,
            output_tail=tail,
        )  # fmt: skip
    return res


def has_script(conn: Executor, paths: ClusterPaths, phase: str) -> bool:
    """True when the image has the script of ``phase``."""
    path = shlex.quote(f"{paths.rootfs}/{SCRIPTS[phase]}")
    return conn.run(f"[ -f {path} ]", check=False).exit_status == 0


def run_script(
    conn: Executor,
    paths: ClusterPaths,
    phase: str,
    env: Mapping[str, str],
    *,
    progress: Progress | None = None,
) -> tuple[bool, str]:
    """Run the image's script of ``phase`` if the image has one.

    Returns ``(ran, stdout)``; a failing script raises HostError naming the
    host, the script, its exit status and its last output lines.
    """
    if not has_script(conn, paths, phase):
        emit(progress, PhaseDone(phase, conn.name, skipped=True))
        return False, ""
    script = shlex.quote(SCRIPTS[phase])
    cmd = (
        f"cd {shlex.quote(paths.rootfs)} && "
        f"if [ -x {script} ]; then exec ./{script}; else exec sh {script}; fi"
    )
    start = time.monotonic()
    res = _run(conn, cmd, env, what=SCRIPTS[phase], command=SCRIPTS[phase], progress=progress)
    emit(progress, PhaseDone(phase, conn.name, seconds=time.monotonic() - start))
    return True, res.stdout


def exports(stdout: str) -> dict[str, str]:
    """``kbuild-export: K=V`` lines of a script's output."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith(EXPORT_PREFIX):
            key, sep, value = line[len(EXPORT_PREFIX) :].partition("=")
            if sep and _SHELL_NAME.match(key.strip()):
                out[key.strip()] = value
    return out


def run_plugin(
    conn: Executor,
    plugin: PluginDoc,
    cwd: str,
    env: Mapping[str, str],
    *,
    progress: Progress | None = None,
) -> None:
    """Run one SHELL plugin (its data on stdin of ``sh -s``) in ``cwd`` (or ``/``)."""
    cmd = f"cd {shlex.quote(cwd)} 2>/dev/null || cd /; sh -s"
    start = time.monotonic()
    _run(
        conn, cmd, env, what=f"plugin {plugin.name} ({plugin.action})",
        command=f"plugin {plugin.name}", stdin=plugin.data, progress=progress,
    )  # fmt: skip
    emit(
        progress,
        PhaseDone(f"{plugin.action}:{plugin.name}", conn.name, seconds=time.monotonic() - start),
    )


def run_command(
    conn: Executor,
    cwd: str,
    command: str,
    env: Mapping[str, str],
    *,
    what: str,
    progress: Progress | None = None,
) -> None:
    """Run a launch command (``sh -c``) in ``cwd``; a failure names host and command."""
    cmd = f"cd {shlex.quote(cwd)} && sh -c {shlex.quote(command)}"
    _run(conn, cmd, env, what=what, command=command, progress=progress)
