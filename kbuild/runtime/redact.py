"""Masking known secrets in what kbuild shows: a second line of defence.

The first line is that secrets never reach output (scripts withhold them,
export lines are not shown). Whatever a host still prints — a tool that
echoes a token, a user's plugin — passes through a :class:`Redactor` that
knows the operation's secrets (the Clusterfile's passwords, what the cluster
driver declares: a kubeadm certificate key, bootstrap tokens) before it
reaches the progress display or an error message.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from kbuild.errors import HostError, HostsError, KbuildError
from kbuild.runtime.clusterfile import Clusterfile
from kbuild.runtime.runevents import Event, HostOutput, Message, Progress

__all__ = ["MASK", "MIN_LENGTH", "Redactor", "clusterfile_secrets"]

MASK = "<redacted>"
MIN_LENGTH = 6
"""Shorter values are not masked: they would mangle ordinary words."""


def clusterfile_secrets(cf: Clusterfile) -> list[str]:
    """SSH passwords and key passphrases of the cluster and of every host group,
    and the embedded registry's password (sealer's ``registry.localRegistry``)."""
    c = cf.cluster
    out: list[str] = []
    for ssh in [c.ssh, *(g.ssh for g in c.hosts)]:
        out += [s for s in (ssh.passwd, ssh.pk_passwd) if s]
    local = c.registry.get("localRegistry") if isinstance(c.registry, dict) else None
    if isinstance(local, dict) and isinstance(local.get("password"), str):
        out.append(local["password"])
    return out


class Redactor:
    """Replaces each known secret by :data:`MASK`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Know more secrets (longest first, so a secret inside another goes too)."""
        found = {s for s in secrets if len(s) >= MIN_LENGTH} | set(self.secrets)
        self.secrets = sorted(found, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with every known secret masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def event(self, event: Event) -> Event:
        """A progress event with its text masked."""
        if isinstance(event, HostOutput):
            return dataclasses.replace(event, line=self.text(event.line))
        if isinstance(event, Message):
            return dataclasses.replace(event, text=self.text(event.text))
        return event

    def progress(self, progress: Progress | None) -> Progress | None:
        """``progress`` seeing masked events."""
        if progress is None:
            return None
        return lambda event: progress(self.event(event))

    def error(self, exc: KbuildError) -> KbuildError:
        """The same error with its message (each host's too, output tails) masked."""
        if isinstance(exc, HostsError):
            for child in exc.errors.values():
                self.error(child)
        if isinstance(exc, HostError):
            exc.output_tail = self.text(exc.output_tail)
            exc.command = exc.command and self.text(exc.command)
        exc.message = self.text(exc.message)
        exc.args = (exc.message,)
        return exc
