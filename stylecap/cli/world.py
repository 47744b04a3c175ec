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


@world_app.command("clip")
def clip(
    world: Optional[Path] = typer.Option(None, "--world", help="World to train on (its clip split) or to "
                                                               "measure (its test split)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write the trained CLIP into "
                                                           "(open_clip layout, with recipe.json and stats.json)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps (default: the shipped recipe's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step."),
    threads: int = typer.Option(2, "--threads", help="CPU threads for training."),
    stats: bool = typer.Option(False, "--stats", help="Print the CLIP's stats: the shipped ones, or measured "
                                                      "on --world's test split."),
    spec: str = typer.Option("world", "--clip", help="The CLIP --stats measures (with --world)."),
) -> None:
    """Train the world's tiny CLIP (`--world W --out DIR`), or print its stats (`--stats`)."""
    from stylecap.world.clip import make_world_clip, print_stats

    if stats:
        print_stats(spec, world)
        return
    if world is None or out is None:
        raise UsageError("training the world CLIP needs --world and --out", "stylecap world clip",
                         "build a world first (`stylecap world build --out W`), then "
                         "`stylecap world clip --world W --out DIR`; or pass --stats")
    print_stats(str(out), None, make_world_clip(world, out, steps, batch_size, threads, log=err_console.print))
