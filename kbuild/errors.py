"""The one exception tree of kbuild.

Library code raises these; the CLI turns them into one message and an exit
code (``exit_code``), with a hint line when ``hint`` is set. A traceback is
shown only with ``--debug``. Messages never contain secrets.

    KbuildError
    ├── KubefileError        file:line:col, the line, a caret      exit 2
    ├── UsageError           bad flags or arguments                exit 2
    ├── BuildError           a step failed (RUN exit code, missing source…)
    │   └── ImageCollectError an image a file names cannot be found or rendered  exit 2
    ├── StoreError           local store: missing image/blob, corrupt data
    │   ├── ImageNotFound
    │   ├── BlobNotFound
    │   └── DigestMismatch   (also raised by the registry client)
    ├── UnsafeLayerError     a layer entry would land outside its target
    ├── RegistryError        HTTP/registry problem, names the reference
    │   ├── AuthError        401: wrong or missing credentials
    │   └── PermissionDenied 403 / insufficient scope
    ├── ClusterfileError     names document, field and value       exit 2
    ├── HostError            names the host; tail of the output
    │   ├── HostKeyError     a changed host key
    │   └── HostsError       several hosts failed (``errors`` per host)
    └── ClusterError         cluster state / life-cycle problem
        └── BackupError      a backup archive is corrupt, foreign, or its passphrase wrong
"""

from __future__ import annotations


class KbuildError(Exception):
    """Base of every error kbuild raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(KbuildError):
    """The command line was wrong."""

    exit_code = 2


class KubefileError(KbuildError):
    """A Kubefile could not be parsed or breaks a rule of the language.

    ``str()`` gives ``FILE:LINE:COL: message`` followed by the source line and
    a caret under the column, when the source line is known.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        filename: str = "Kubefile",
        line: int = 0,
        column: int = 0,
        source_line: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.filename = filename
        self.line = line
        self.column = column
        self.source_line = source_line

    def __str__(self) -> str:
        where = self.filename
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        text = f"{where}: {self.message}"
        if self.source_line is not None:
            text += "\n    " + self.source_line.rstrip("\n")
            if self.column:
                text += "\n    " + " " * (self.column - 1) + "^"
        return text


class BuildError(KbuildError):
    """A build step failed."""


class ImageCollectError(BuildError):
    """A container image the image's files ask for cannot be resolved or its reference rendered.

    The message names the image and the file (line, chart or list) that wants it.
    """

    exit_code = 2


class StoreError(KbuildError):
    """The local store is missing something or holds bad data."""


class ImageNotFound(StoreError):
    """No image of that name in the local store."""


class BlobNotFound(StoreError):
    """No blob of that digest in the local store."""


class DigestMismatch(StoreError):
    """Content did not hash to the digest it was announced under."""

    def __init__(self, expected: str, actual: str, *, what: str = "blob") -> None:
        super().__init__(f"{what}: expected digest {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class UnsafeLayerError(KbuildError):
    """A layer holds an entry that would land outside its target directory."""


class RegistryError(KbuildError):
    """A registry refused a request or could not be reached."""


class AuthError(RegistryError):
    """The registry did not accept the credentials (or needs some)."""


class PermissionDenied(RegistryError):
    """The credentials are valid but lack the permission asked for."""


class ClusterfileError(KbuildError):
    """A Clusterfile (or the flags that stand for one) is invalid."""

    exit_code = 2


class HostError(KbuildError):
    """Something failed on one host; the message names it."""

    def __init__(
        self,
        host: str,
        message: str,
        *,
        command: str | None = None,
        exit_status: int | None = None,
        output_tail: str = "",
        hint: str | None = None,
    ) -> None:
        text = f"{host}: {message}"
        if command is not None:
            text += f"\n  command: {command}"
        if exit_status is not None:
            text += f"\n  exit status: {exit_status}"
        if output_tail:
            text += "\n  last output:\n" + "\n".join(
                "    " + line for line in output_tail.rstrip("\n").splitlines()
            )
        super().__init__(text, hint=hint)
        self.host = host
        self.command = command
        self.exit_status = exit_status
        self.output_tail = output_tail


class HostKeyError(HostError):
    """A host presented a key different from the one recorded for it."""


class ClusterError(KbuildError):
    """The cluster's recorded state does not allow the operation."""


class BackupError(ClusterError):
    """A backup archive cannot be written, read or used (names the file)."""


class HostsError(HostError):
    """Several hosts failed in one parallel operation.

    ``errors`` maps each failed host's name to its own error; the message
    lists them all.
    """

    def __init__(self, errors: dict[str, KbuildError]) -> None:
        names = sorted(errors)
        lines = [f"{len(names)} hosts failed:"]
        for n in names:
            lines.append("  " + str(errors[n]).replace("\n", "\n  "))
        Exception.__init__(self, "\n".join(lines))
        self.message = "\n".join(lines)
        self.hint = next((e.hint for e in errors.values() if e.hint), None)
        self.host = ", ".join(names)
        self.command = None
        self.exit_status = None
        self.output_tail = ""
        self.errors = errors
