"""`stylecap demo` (the offline end-to-end demo) and `stylecap bench quality` (the same at full size)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app, err_console
from stylecap.cli.bench import bench_app


def _seeds(text: str) -> list[int]:
    from stylecap.errors import UsageError

    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"bad seed list {text!r}", "--seeds", "write seeds as 0,1,2") from None


def _tasks(text: str | None) -> dict:
    return {"tasks": [t.strip() for t in text.split(",") if t.strip()]} if text else {}


def _run(spec) -> None:
    from rich.console import Console

    from stylecap.experiments.demo import checks_table, report_table, run_demo

    report = run_demo(spec)
    console = Console()
    console.print(report_table(report))
    console.print(checks_table(report))
    err_console.print(f"report: {spec.out / 'report.json'}, gallery: {spec.out / 'gallery.html'} "
                      f"({report['seconds']:.0f} s)")


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("stylecap-demo"), "--out", help="Folder for the world, models, report.json "
                                                                 "and gallery.html (reused when run again)."),
    world: Optional[Path] = typer.Option(None, "--world", help="Use this world instead of building a small one."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps for every model, the same budget "
                                                             "each (default 800: under 5 minutes on 2 cores)."),
    seeds: str = typer.Option("0", "--seeds", help="Training seeds, comma-separated."),
    voice: str = typer.Option("egocentric", "--voice", help="Style voice: egocentric, uplifting, character-based "
                                                           "or reviews."),
    clip: str = typer.Option("world", "--clip", help="CLIP spec (default: the shipped world CLIP)."),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Caption at most this many test images."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated, from caption,vqa,ve,news,style "
                                                              "(default: caption,style)."),
) -> None:
    """Text-only captioning on the synthetic world, offline: with and without noise, mean shift, an
    image-trained reference and a style voice, scored on held-out test images."""
    from stylecap.experiments.demo import DemoSpec

    given = {"steps": steps} if steps is not None else {}  # --steps 0 is checked, not a default
    _run(DemoSpec(out=out, world=world, seeds=_seeds(seeds), voice=voice, clip=clip, test_limit=test_limit,
                  **given, **_tasks(tasks)))


@bench_app.command("quality")
def quality(
    out: Path = typer.Option(Path("stylecap-quality"), "--out", help="Folder for the world, models and report."),
    world: Optional[Path] = typer.Option(None, "--world", help="Use this world instead of building a default one."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps for every model (default 3000)."),
    seeds: str = typer.Option("0,1", "--seeds", help="Training seeds, comma-separated (two or more)."),
    voice: Optional[str] = typer.Option(None, "--voice", help="Train only this style voice (default: all four: "
                                                              "egocentric, uplifting, character-based, reviews)."),
    clip: str = typer.Option("world", "--clip", help="CLIP spec (default: the shipped world CLIP)."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated, from caption,vqa,ve,news,style "
                                                              "(default: all five)."),
    test_limit: Optional[int] = typer.Option(None, "--test-limit", help="Score at most this many test items."),
) -> None:
    """The demo at full size: default world, full step budgets, several seeds, captioning, VQA,
    entailment and news, the best lever of each transfer regime, the images curve, all four style
    voices with and without the no-image lever, target checks."""
    from stylecap.experiments.demo import quality_spec

    given = {"steps": steps} if steps is not None else {}  # --steps 0 is checked, not a default
    if voice:
        given.update(voice=voice, voices=[voice])
    _run(quality_spec(out, world=world, seeds=_seeds(seeds), clip=clip, test_limit=test_limit,
                      **given, **_tasks(tasks)))
