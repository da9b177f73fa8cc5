"""Plugin phases: the Clusterfile's and the image's ``kind: Plugin`` shell hooks
at sealer's phase names (the phase title is the plugin action)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.contract import run_plugin
from kbuild.runtime.phases.base import Phase, Scope
from kbuild.runtime.phases.context import Context

__all__ = ["PluginPhase"]

Cwd = Literal["rootfs", "/", "rootfs-if-mounted"]


class PluginPhase(Phase):
    """Runs the plugins of one action: on every host in scope (host actions)
    or on master0 (cluster actions), in the rootfs or in ``/``."""

    def __init__(
        self,
        action: str,
        *,
        recorded: bool = True,
        cwd: Cwd = "rootfs",
        when: Callable[[Context], bool] | None = None,
    ) -> None:
        self.title = action
        self.scope: Scope = "host" if action in titles.HOST_PLUGIN_ACTIONS else "cluster"
        self.recorded = recorded
        self.cwd = cwd
        self.when = when

    def run(self, ctx: Context, host: Host) -> None:
        """Every plugin of this action whose scope has the host's roles."""
        conn = ctx.conn(host)
        if self.cwd == "/" or (self.cwd == "rootfs-if-mounted" and not ctx.mounted(host)):
            cwd = "/"
        else:
            cwd = ctx.paths.rootfs
        for plugin in ctx.plugins_for(self.title):
            if plugin.applies_to(host.roles):
                run_plugin(conn, plugin, cwd, ctx.env(host, self.title), progress=ctx.progress)
