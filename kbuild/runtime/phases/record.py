"""record: the cluster's record (Clusterfile and state, 0600) copied to every
master, so it is not only on this machine; masters that do not answer are
skipped (a later run copies it again)."""

from __future__ import annotations

import json

from kbuild.errors import KbuildError
from kbuild.runtime import clusterfile as cfmod
from kbuild.runtime import titles
from kbuild.runtime.executor import FileSpec
from kbuild.runtime.phases.base import ClientPhase
from kbuild.runtime.phases.context import Context
from kbuild.runtime.pool import run_on_hosts
from kbuild.runtime.runevents import Message, emit

__all__ = ["SaveRecordPhase", "record_files"]


def record_files(ctx: Context) -> dict[str, FileSpec]:
    """The record as files under ``<dataRoot>/<cluster>/`` on a master."""
    base = ctx.paths.base
    state = json.dumps(ctx.state.to_json(), indent=2).encode()
    return {
        f"{base}/Clusterfile": FileSpec(cfmod.dumps(ctx.cf).encode(), 0o600),
        f"{base}/state.json": FileSpec(state, 0o600),
    }


class SaveRecordPhase(ClientPhase):
    """Copy the record to every master (only what changed is sent)."""

    title = titles.RECORD
    quiet = True

    def run_client(self, ctx: Context) -> None:
        """Every master that answers gets the copy."""
        files = record_files(ctx)
        masters = [m for m in ctx.cf.cluster.masters() if m.ip not in ctx.failed]
        res = run_on_hosts(
            masters, lambda m: ctx.conn(m).put_files(files), name=lambda m: m.ip, check=False
        )
        for ip, err in res.errors.items():
            why = err.message.splitlines()[0] if isinstance(err, KbuildError) else str(err)
            emit(ctx.progress, Message(f"{ip}: the cluster's record was not copied there: {why}"))
