"""launch: the image's apps (CMDS, LAUNCH apps, CMD, or the Clusterfile's
``cmds``/``appNames``) started on master0, once."""

from __future__ import annotations

from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.contract import run_command
from kbuild.runtime.phases.base import Phase
from kbuild.runtime.phases.context import Context

__all__ = ["LaunchPhase"]


class LaunchPhase(Phase):
    """Every launch command, in the app's directory, with the app's env."""

    title = titles.LAUNCH
    scope = "cluster"

    def record_key(self, ctx: Context) -> str:
        """Once per image: a newer image on the cluster launches its apps again."""
        return f"{self.title}@{ctx.generation}" if ctx.generation else self.title

    def run(self, ctx: Context, host: Host) -> None:
        """The commands in order; the first failure stops them."""
        assert ctx.image is not None
        c = ctx.cf.cluster
        conn = ctx.conn(host)
        for cwd, command, app_env in ctx.image.launch_commands(c.app_names, c.cmds):
            env = {**ctx.env(host, self.title), **app_env}
            run_command(
                conn, f"{ctx.paths.rootfs}/{cwd}", command, env, what="launch command",
                progress=ctx.progress,
            )  # fmt: skip
