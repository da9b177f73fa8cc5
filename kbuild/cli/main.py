"""The ``kbuild`` command: one click group, commands from the sibling modules."""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from kbuild import __version__
from kbuild.errors import KbuildError

#: Which module defines each command. Modules are imported only when one of
#: their commands runs, so ``kbuild images`` does not pay for paramiko, httpx
#: and lark. tests/cli/test_main.py checks this table against the modules.
COMMAND_MODULES: dict[str, str] = {
    "build": "build",
    "inspect": "build",
    "history": "build",
    "images": "images",
    "tag": "images",
    "rmi": "images",
    "save": "images",
    "load": "images",
    "prune": "images",
    "fsck": "images",
    "login": "registry",
    "logout": "registry",
    "push": "registry",
    "pull": "registry",
    "run": "cluster",
    "join": "cluster",
    "delete": "cluster",
    "apply": "cluster",
    "exec": "cluster",
    "upgrade": "day2",
    "status": "day2",
    "check": "day2",
    "backup": "backup",
    "restore": "backup",
    "cert": "backup",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return super().get_command(ctx, cmd_name)
        module = importlib.import_module(f"kbuild.cli.{module_name}")
        for command in module.commands:
            if command.name == cmd_name:
                return command
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kbuild")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug output.")
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    envvar="KBUILD_ROOT",
    help="Store root (default: /var/lib/kbuild as root, else the XDG data dir).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, root: str | None) -> None:
    """Build Kubernetes cluster images and run them on hosts."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["root"] = root


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn kbuild errors into a message and exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        status = cli.main(args=argv, prog_name="kbuild", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KbuildError as exc:
        if debug:
            traceback.print_exc()
        click.secho(f"Error: {exc}", err=True, fg="red")
        if exc.hint:
            click.echo(f"Hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    # Without standalone mode, click returns the code a command gave ctx.exit().
    if isinstance(status, int) and status != 0:
        sys.exit(status)


if __name__ == "__main__":
    main()
