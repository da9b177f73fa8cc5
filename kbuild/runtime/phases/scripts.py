"""Script phases: the image's ``scripts/<phase>.sh`` (runtime contract) on
every host (init-host) or on master0 (init-cluster, clean-cluster)."""

from __future__ import annotations

from collections.abc import Callable

from kbuild.runtime.clusterfile import Host
from kbuild.runtime.contract import run_script
from kbuild.runtime.phases.base import Phase, Scope
from kbuild.runtime.phases.context import Context

__all__ = ["ScriptPhase"]


class ScriptPhase(Phase):
    """Runs the image's script of ``title`` (nothing when the image has none)."""

    def __init__(
        self,
        title: str,
        scope: Scope,
        *,
        recorded: bool = True,
        when: Callable[[Context], bool] | None = None,
        mounted_only: bool = False,
    ) -> None:
        self.title = title
        self.scope = scope
        self.recorded = recorded
        self.when = when
        self.mounted_only = mounted_only

    def run(self, ctx: Context, host: Host) -> None:
        """The script with the host's environment (skipped where nothing is mounted
        when ``mounted_only``: the image's files are not there)."""
        if self.mounted_only and not ctx.mounted(host):
            return
        run_script(
            ctx.conn(host), ctx.paths, self.title, ctx.env(host, self.title),
            progress=ctx.progress,
        )  # fmt: skip
