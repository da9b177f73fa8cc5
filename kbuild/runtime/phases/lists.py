"""The phase list of each flow: the one list that runs and that ``--dry-run`` prints.

    converge (run, join, apply)          delete --masters/--nodes     delete --all
    preflight        all worked on        leave-cluster   lead master  pre-uninstall   master0
    provision        all worked on        pre-clean-host  hosts        clean-cluster   master0
    pre-scaleup      lead, scale-up       clean-host      hosts        pre-clean-host  hosts
    pre-install      lead, once           post-clean-host hosts        clean-host      hosts
    pre-init-host    hosts                forget          here         post-clean-host hosts
    init-host        hosts                record          masters      post-uninstall  master0
    init-cluster     master0, once                                     forget          here
    join-cluster     lead, if joiners
    join-host        joiners (masters one by one)
    launch           lead, once
    post-init-host   hosts
    post-install     lead, once
    post-scaleup     lead, scale-up
    record           every master (Clusterfile and state, 0600)

"lead" is master0, or once the cluster is initialized, the first master that
answers (:attr:`Context.lead <kbuild.runtime.phases.context.Context.lead>`).
The cluster driver inserts its own phases (:meth:`ClusterDriver.extend
<kbuild.runtime.driver.ClusterDriver.extend>`).
"""

from __future__ import annotations

from kbuild.runtime import titles
from kbuild.runtime.clusterfile import Host
from kbuild.runtime.driver import CONVERGE, DELETE_CLUSTER, DELETE_HOSTS, ClusterDriver
from kbuild.runtime.phases.clean import (
    CleanHostPhase,
    ForgetClusterPhase,
    ForgetHostsPhase,
    LeaveClusterPhase,
)
from kbuild.runtime.phases.context import Context
from kbuild.runtime.phases.join import JoinClusterPhase, JoinHostPhase
from kbuild.runtime.phases.launch import LaunchPhase
from kbuild.runtime.phases.manager import Manager
from kbuild.runtime.phases.plugins import PluginPhase
from kbuild.runtime.phases.preflight import PreflightPhase
from kbuild.runtime.phases.provision import ProvisionPhase
from kbuild.runtime.phases.record import SaveRecordPhase
from kbuild.runtime.phases.scripts import ScriptPhase

__all__ = ["converge_list", "delete_cluster_list", "delete_hosts_list", "start_converge"]


def start_converge(
    ctx: Context, targets: list[Host], *, new_hosts: list[Host] | None = None
) -> None:
    """The hosts a converge works on, and whether it is a scale-up (hosts not
    finished yet — ``new_hosts``, by default the targets — join a cluster that
    finished installing), decided once before the list runs."""
    ctx.targets = targets
    joining = targets if new_hosts is None else new_hosts
    ctx.scaleup = titles.POST_INSTALL in ctx.state.cluster_steps and bool(joining)


def is_scaleup(ctx: Context) -> bool:
    """The converge is a scale-up (see :func:`start_converge`)."""
    return ctx.scaleup


def _m0_reached(ctx: Context) -> bool:
    return any(h.ip == ctx.master0.ip for h in ctx.targets)


def converge_list(driver: ClusterDriver) -> Manager:
    """run, join and apply: every host of the Clusterfile to the finished state."""
    mgr = Manager([
        PreflightPhase(),
        ProvisionPhase(),
        PluginPhase(titles.PRE_SCALEUP, recorded=False, when=is_scaleup),
        PluginPhase(titles.PRE_INSTALL),
        PluginPhase(titles.PRE_INIT_HOST),
        ScriptPhase(titles.INIT_HOST, "host"),
        ScriptPhase(titles.INIT_CLUSTER, "cluster"),
        JoinClusterPhase(),
        JoinHostPhase(),
        LaunchPhase(),
        PluginPhase(titles.POST_INIT_HOST),
        PluginPhase(titles.POST_INSTALL),
        PluginPhase(titles.POST_SCALEUP, recorded=False, when=is_scaleup),
        SaveRecordPhase(),
    ])  # fmt: skip
    driver.extend(CONVERGE, mgr)
    return mgr


def delete_hosts_list(
    driver: ClusterDriver, leaving: list[Host], *, forget_unreachable: bool
) -> Manager:
    """``delete --masters/--nodes``: master0 lets them go, they are cleaned, forgotten."""
    mgr = Manager([
        LeaveClusterPhase(leaving),
        PluginPhase(titles.PRE_CLEAN_HOST, recorded=False, cwd="rootfs-if-mounted"),
        CleanHostPhase(),
        PluginPhase(titles.POST_CLEAN_HOST, recorded=False, cwd="/"),
        ForgetHostsPhase(leaving, forget_unreachable=forget_unreachable),
        SaveRecordPhase(),
    ], keep_going=True)  # fmt: skip
    driver.extend(DELETE_HOSTS, mgr)
    return mgr


def delete_cluster_list(driver: ClusterDriver) -> Manager:
    """``delete --all`` on hosts that stay: every host as it was before ``run``."""
    mgr = Manager([
        PluginPhase(titles.PRE_UNINSTALL, recorded=False, cwd="rootfs-if-mounted",
                    when=_m0_reached),
        ScriptPhase(titles.CLEAN_CLUSTER, "cluster", recorded=False, when=_m0_reached,
                    mounted_only=True),
        PluginPhase(titles.PRE_CLEAN_HOST, recorded=False, cwd="rootfs-if-mounted"),
        CleanHostPhase(),
        PluginPhase(titles.POST_CLEAN_HOST, recorded=False, cwd="/"),
        PluginPhase(titles.POST_UNINSTALL, recorded=False, cwd="/", when=_m0_reached),
        ForgetClusterPhase(),
    ], keep_going=True)  # fmt: skip
    driver.extend(DELETE_CLUSTER, mgr)
    return mgr
