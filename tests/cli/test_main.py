"""The top-level command: lazy command table, error rendering, exit codes."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from kbuild.cli.main import COMMAND_MODULES


@pytest.mark.parametrize("module_name", sorted(set(COMMAND_MODULES.values())))
def test_command_table_matches_modules(module_name: str) -> None:
    module = importlib.import_module(f"kbuild.cli.{module_name}")
    defined = {c.name for c in module.commands}
    listed = {name for name, mod in COMMAND_MODULES.items() if mod == module_name}
    assert defined == listed


def _kbuild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kbuild.cli.main", *args], capture_output=True, text=True
    )


def test_help_lists_every_command() -> None:
    out = _kbuild("--help")
    assert out.returncode == 0
    for name in COMMAND_MODULES:
        assert f"  {name} " in out.stdout or f"  {name}\n" in out.stdout


def test_images_does_not_import_network_or_ssh_libraries() -> None:
    code = (
        "import sys; from kbuild.cli.main import cli; "
        "cli.get_command(None, 'images'); "
        "print(sorted(m for m in ('paramiko', 'httpx', 'lark') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unknown_command_is_a_usage_error() -> None:
    out = _kbuild("bulid")
    assert out.returncode == 2
    assert "No such command 'bulid'" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_command_exit_code_reaches_the_shell() -> None:
    code = (
        "import click, sys\n"
        "from kbuild.cli import main as m\n"
        "@click.command('fail3')\n"
        "@click.pass_context\n"
        "def fail3(ctx):\n"
        "    ctx.exit(3)\n"
        "m.cli.add_command(fail3)\n"
        "m.main(['fail3'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 3, out.stderr
