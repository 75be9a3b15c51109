"""What every entry point's Click layer shares: run a command, turning errors a user can act on into one line."""

from __future__ import annotations

import sys
from typing import Iterable

import click

from memlora import LOOP_STAGES
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


def int_list(text: str) -> tuple[int, ...]:
    """A comma list of integers ("4,8") -> (4, 8); anything else is a click usage error."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of integers") from None


def parse_stage_counts(values: str | Iterable[str] | None, option: str, *, total: bool = False,
                       stages: tuple[str, ...] = LOOP_STAGES) -> int | dict[str, int] | None:
    """A per-stage count option -> ``{stage: N}``; None when nothing was given.

    ``values``: one string or the repeated values of a ``multiple=True`` option; each is ``STAGE=N`` or a comma list
    ``STAGE=N,STAGE=N`` (both forms mix). ``total=True`` also accepts one bare ``N`` (every stage), returned as an int.
    STAGE must be one of ``stages`` and N >= 0; anything else is a one-line ``MemloraError`` naming ``option``.
    """
    items = [values] if isinstance(values, str) else list(values or ())
    parts = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not parts:
        return None
    if total and len(parts) == 1 and parts[0].isdigit():
        return int(parts[0])
    counts: dict[str, int] = {}
    for part in parts:
        stage, sep, number = (s.strip() for s in part.partition("="))
        if not sep or stage not in stages or not number.isdigit():
            form = "N or STAGE=N" if total else "STAGE=N"
            raise MemloraError(f"{option} takes {form} (STAGE one of {', '.join(stages)}, N >= 0), got {part!r}")
        counts[stage] = int(number)
    return counts
