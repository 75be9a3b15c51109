"""``memlora``: the top-level command. A thin Click layer; every command lives next to the library code it calls.

Subcommands are imported lazily so ``memlora --help`` stays fast and a heavy import (torch) happens only when needed.
Errors a user can act on (``MemloraError``, bad paths) print one line and exit non-zero; they never show a traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from memlora.errors import MemloraError

# name -> "module:attribute" of a click.Command
COMMANDS = {
    "demo": ("memlora.demo:demo", "Run the memory loop end to end on the built-in default and print what it did."),
    "make-model": ("memlora.models:make_model_command", "Build a synthetic model (tiny or a real size) of a real architecture."),
    "chat": ("memlora.runtime.chat:chat", "Chat with a memory that lives on disk (remembers across runs)."),
    "eval": ("memlora.bench.eval_cli:eval_command", "Evaluate the memory system on LoCoMo or the synthetic world."),
    "pull": ("memlora.cli:pull_command", "Download a real base model (smollm2-135m-instruct) or convert a local GGUF."),
    "locomo": ("memlora.distill.locomo:locomo_command", "Check a LoCoMo file: load it and print its counts per category and split."),
}


@click.command("pull")
@click.argument("name", required=False)
@click.option("--gguf", "gguf", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Convert this local GGUF file instead of pulling a named model.")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to write (with --gguf).")
@click.option("--force", is_flag=True, help="Replace an existing --output folder.")
def pull_command(name, gguf, output, force) -> None:
    """Download a pinned real model (network) or convert a local GGUF into a Hugging Face folder; print its path."""
    from memlora.export.gguf_import import convert_gguf
    from memlora.export.pull import MODELS, pull_model

    def progress(text: str) -> None:
        click.echo(f"[pull] {text}", err=True)

    if gguf is not None:
        if name is not None:
            raise MemloraError("give either a model name or --gguf FILE, not both")
        if output is None:
            raise MemloraError("--gguf needs -o DIR (the folder to write)")
        progress(f"converting {gguf} (transformers reads and de-quantizes it)")
        path = convert_gguf(gguf, output, force=force)
    else:
        if name is None:
            raise MemloraError(f"name a model to pull ({', '.join(sorted(MODELS))}) or pass --gguf FILE -o DIR")
        if output is not None:
            raise MemloraError("-o is for --gguf; a named model goes into the memlora cache")
        path = pull_model(name, progress=progress)
    click.echo(str(path))


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module_name, attr = self.lazy[name][0].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="memlora")
def cli() -> None:
    """memlora: private long-term memory for a small on-device model, one LoRA expert per memory operation."""


def main(args=None) -> None:
    run_cli(cli, args)


if __name__ == "__main__":
    main()
