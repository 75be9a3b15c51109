"""``memlora pull``: the Click layer over ``memlora.export.pull`` (a pinned model by name) and ``convert_gguf`` (any GGUF)."""

from __future__ import annotations

from pathlib import Path

import click

from memlora.errors import MemloraError


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
