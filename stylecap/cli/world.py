"""`stylecap world …`: the synthetic shapes world (an offline test bed and the embedded default)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app, err_console
from stylecap.errors import UsageError

world_app = typer.Typer(help="The synthetic shapes world: scenes known exactly, in public dataset formats.",
                        no_args_is_help=True)
app.add_typer(world_app, name="world")


@world_app.command("build")
def build(
    out: Path = typer.Option(..., "--out", help="Folder to write the world into (created; must be empty)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed and sizes give identical files."),
    size: str = typer.Option("default", "--size", help="Preset split sizes: small, default or large."),
    split: Optional[list[str]] = typer.Option(
        None, "--split", help="Override one split's image count, e.g. --split clip=5000 (repeatable; "
                              "splits: clip, train, pairs, val, test)."),
    image_size: int = typer.Option(64, "--image-size", help="Image width and height in pixels."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: all cores)."),
    force: bool = typer.Option(False, "--force", help="Rebuild over a world already in --out."),
) -> None:
    """Build a shapes world: images, captions, VQA, SNLI / SNLI-VE, news and style files."""
    from stylecap.world.build import build_world

    info = build_world(out, seed=seed, size=size, image_size=image_size, splits=_split_counts(split or []),
                       workers=workers, force=force, progress=True)
    counts = ", ".join(f"{name} {n}" for name, n in info["splits"].items())
    err_console.print(f"world written to {out} ({counts} images)")


def _split_counts(values: list[str]) -> dict[str, int]:
    counts = {}
    for value in values:
        name, _, number = value.partition("=")
        if not number.strip().isdigit():
            raise UsageError(f"bad split size {value!r}", "--split", "write it as NAME=COUNT, e.g. clip=5000")
        counts[name.strip()] = int(number)
    return counts
