"""Helpers for the Kubefile tests."""

from __future__ import annotations

import pytest

from kbuild.errors import KubefileError
from kbuild.kubefile import Instruction, parse


def one(text: str) -> Instruction:
    """The single instruction of ``text`` placed after ``FROM base``."""
    kf = parse("FROM base\n" + text)
    assert len(kf.stages) == 1
    (instr,) = kf.stages[0].instructions
    return instr


def error(text: str) -> KubefileError:
    """The KubefileError that parsing ``text`` raises."""
    with pytest.raises(KubefileError) as info:
        parse(text)
    return info.value
