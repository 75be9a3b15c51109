"""What every entry point's Click layer shares: run a command, turning errors a user can act on into one line."""

from __future__ import annotations

import sys

import click

from memlora.errors import MemloraError


def run_cli(command: click.Command, args=None) -> None:
    """Run a click command; turn ``MemloraError`` and OS errors into one clear line and exit code 1."""
    try:
        command.main(args=args, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except (MemloraError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
