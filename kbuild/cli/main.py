"""The ``kbuild`` command: one click group, commands from the sibling modules."""

from __future__ import annotations

import sys
import traceback

import click

from kbuild import __version__
from kbuild.errors import KbuildError

from . import build, cluster, images, registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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


for _module in (build, images, registry, cluster):
    for _command in _module.commands:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn kbuild errors into a message and exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="kbuild", standalone_mode=False)
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


if __name__ == "__main__":
    main()
