"""Typed Kubefile instructions, the parser's output and the builder's input.

Every instruction carries its source ``Position``. Words are *not* yet
variable-expanded where expansion depends on build state (ARG/ENV values);
``kbuild.kubefile.expand`` does that with the scope the builder tracks. Flags
(``--from``, ``--chmod``, ``--platform``, ``--checksum``) are parsed into
fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Position:
    """Where an instruction starts in its file (1-based line and column)."""

    filename: str
    line: int
    column: int = 1
    end_line: int = 0


@dataclass(frozen=True)
class Instruction:
    """Base of every instruction."""

    pos: Position
    #: The instruction as written (continuations joined), for history/inspect.
    original: str


@dataclass(frozen=True)
class From(Instruction):
    image: str  # "scratch" or an image reference, unexpanded
    platform: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class Arg(Instruction):
    name: str
    default: str | None = None  # None when declared without a value


@dataclass(frozen=True)
class Env(Instruction):
    pairs: tuple[tuple[str, str], ...]  # values unexpanded, quotes removed


@dataclass(frozen=True)
class Label(Instruction):
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Maintainer(Instruction):
    name: str


@dataclass(frozen=True)
class Copy(Instruction):
    sources: tuple[str, ...]  # unexpanded; may contain globs and ${ARCH}
    dest: str
    from_stage: str | None = None  # --from=
    chmod: str | None = None  # --chmod= (octal text)
    chown: str | None = None  # --chown= (accepted; layers are root-owned)


@dataclass(frozen=True)
class Add(Copy):
    checksum: str | None = None  # --checksum=sha256:...


@dataclass(frozen=True)
class Run(Instruction):
    #: Shell form: the command text (``/bin/sh -c``). Exec form: None.
    command: str | None = None
    #: Exec form: the JSON array. Shell form: None.
    argv: tuple[str, ...] | None = None
    #: Heredoc bodies by delimiter name, in order (``RUN <<EOF``).
    heredocs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Cmd(Instruction):
    """Old sealer form: commands run at ``kbuild run`` (several are appended)."""

    command: str | None = None
    argv: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Cmds(Instruction):
    commands: tuple[str, ...]


@dataclass(frozen=True)
class Launch(Instruction):
    apps: tuple[str, ...]


@dataclass(frozen=True)
class App(Instruction):
    name: str
    sources: tuple[str, ...]  # local://path, plain path, or http(s)://url


@dataclass(frozen=True)
class Cni(App):
    pass


@dataclass(frozen=True)
class Csi(App):
    pass


@dataclass(frozen=True)
class AppCmds(Instruction):
    name: str
    commands: tuple[str, ...]


@dataclass(frozen=True)
class AppEnv(Instruction):
    name: str
    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class KubeVersion(Instruction):
    constraint: str


@dataclass(frozen=True)
class Image(Instruction):
    """Container images to carry in ``registry/`` that no file of the image names.

    ``refs`` are expansion-ready words; ``app`` (``--app=NAME``) says which app
    wants them (operators' images), for ``kbuild inspect`` and run-time reports.
    """

    refs: tuple[str, ...]
    app: str | None = None


# Dockerfile instructions that ordinary container images need (issue 5).
@dataclass(frozen=True)
class Entrypoint(Instruction):
    command: str | None = None
    argv: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Workdir(Instruction):
    path: str


@dataclass(frozen=True)
class User(Instruction):
    user: str


@dataclass(frozen=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Volume(Instruction):
    paths: tuple[str, ...]


@dataclass(frozen=True)
class StopSignal(Instruction):
    signal: str


@dataclass(frozen=True)
class Shell(Instruction):
    argv: tuple[str, ...]


@dataclass
class Stage:
    """One ``FROM`` and what follows it, up to the next ``FROM``."""

    index: int
    base: From
    instructions: list[Instruction] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.base.alias or str(self.index)


@dataclass
class Kubefile:
    """A parsed Kubefile: ARGs before the first FROM, then the stages."""

    filename: str
    global_args: list[Arg]
    stages: list[Stage]
    escape: str = "\\"
