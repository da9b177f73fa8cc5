"""The Kubefile language: parse a Kubefile into typed instructions.

``parse(text, filename)`` gives a :class:`Kubefile` (global ARGs and stages
of instruction dataclasses with source positions) or raises
:class:`~kbuild.errors.KubefileError`. Words stay unexpanded; the builder
expands them with :func:`expand` (one word) or :func:`expand_instruction`
(every expandable field of an instruction) and the ARG/ENV scope it tracks.
"""

from kbuild.kubefile.expand import expand, expand_instruction, unquote, variables
from kbuild.kubefile.instructions import (
    Add,
    App,
    AppCmds,
    AppEnv,
    Arg,
    Cmd,
    Cmds,
    Cni,
    Copy,
    Csi,
    Entrypoint,
    Env,
    Expose,
    From,
    Image,
    Instruction,
    Kubefile,
    KubeVersion,
    Label,
    Launch,
    Maintainer,
    Position,
    Run,
    Shell,
    Stage,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from kbuild.kubefile.parser import parse

__all__ = [
    "Add",
    "App",
    "AppCmds",
    "AppEnv",
    "Arg",
    "Cmd",
    "Cmds",
    "Cni",
    "Copy",
    "Csi",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Image",
    "Instruction",
    "KubeVersion",
    "Kubefile",
    "Label",
    "Launch",
    "Maintainer",
    "Position",
    "Run",
    "Shell",
    "Stage",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "expand",
    "expand_instruction",
    "parse",
    "unquote",
    "variables",
]
