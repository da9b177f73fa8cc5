"""The names of the life-cycle phases: one name per phase, used for its state
record, its progress events and the plugins that run at it (sealer's plugin
phase names are among them)."""

from __future__ import annotations

PREFLIGHT = "preflight"
PROVISION = "provision"
PRE_INSTALL = "pre-install"
PRE_INIT_HOST = "pre-init-host"
INIT_HOST = "init-host"
INIT_CLUSTER = "init-cluster"
JOIN_CLUSTER = "join-cluster"
JOIN_HOST = "join-host"
LAUNCH = "launch"
POST_INIT_HOST = "post-init-host"
POST_INSTALL = "post-install"
PRE_SCALEUP = "pre-scaleup"
POST_SCALEUP = "post-scaleup"
LEAVE_CLUSTER = "leave-cluster"
PRE_CLEAN_HOST = "pre-clean-host"
CLEAN_HOST = "clean-host"
POST_CLEAN_HOST = "post-clean-host"
PRE_UNINSTALL = "pre-uninstall"
CLEAN_CLUSTER = "clean-cluster"
POST_UNINSTALL = "post-uninstall"
FORGET = "forget"
RECORD = "record"
RENDER = "render"
"""``KBUILD_PHASE`` while templates are rendered (part of provision)."""
UPGRADE_HOST = "upgrade-host"
UPGRADE = "upgrade"
ROLLBACK = "rollback"

HOST_PLUGIN_ACTIONS = frozenset(
    {PRE_INIT_HOST, POST_INIT_HOST, PRE_CLEAN_HOST, POST_CLEAN_HOST, UPGRADE_HOST}
)
"""Plugin phases that run on every host in the plugin's scope."""

PLUGIN_ACTIONS = (
    PRE_INIT_HOST,
    POST_INIT_HOST,
    PRE_CLEAN_HOST,
    POST_CLEAN_HOST,
    UPGRADE_HOST,
    PRE_INSTALL,
    POST_INSTALL,
    PRE_UNINSTALL,
    POST_UNINSTALL,
    PRE_SCALEUP,
    POST_SCALEUP,
    UPGRADE,
    ROLLBACK,
)
"""sealer's plugin phase names; the host ones run on hosts, the rest on master0."""
