"""`stylecap eval`: score a trained model on a task's data, on images or on text."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app
from stylecap.errors import PartialRun


@app.command("eval")
def eval_command(
    model: Path = typer.Option(..., "--model", help="A model folder written by `stylecap train` (its model/)."),
    data: Path = typer.Option(..., help="Evaluation data in the task's public format (file or folder)."),
    input: str = typer.Option("images", help="images (the paper's protocol) | text (the CLIP text the task gives)."),
    split: Optional[str] = typer.Option("test", help="Split of a multi-split file or folder (Karpathy, VQA, SNLI)."),
    images: Optional[Path] = typer.Option(None, help="Image root the dataset's image paths are relative to."),
    captions: Optional[Path] = typer.Option(None, help="VQA on text: the images' captions (dataset_coco.json or captions_<split>.json)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: RUN/eval/SPLIT-INPUT beside the model)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N items."),
    batch_size: int = typer.Option(32, help="Items decoded per batch."),
    beam: Optional[int] = typer.Option(None, help="Beam width (default: the model's)."),
    meteor: bool = typer.Option(True, "--meteor/--no-meteor", help="Compute METEOR (captioning; slow to start)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Write predictions (JSONL) and metrics (JSON) for a model on a task's data, and print the scores."""
    from rich.console import Console

    from stylecap.workflows.evaluate import evaluate, metrics_table

    result = evaluate(model, data, input=input, split=split, images=images, captions=captions, out=out, limit=limit,
                      batch_size=batch_size, num_beams=beam, meteor=meteor, progress=not quiet)
    Console().print(metrics_table(result.report))
    typer.echo(f"predictions: {result.predictions}\nmetrics: {result.metrics}")
    if result.incomplete:  # missing or unreadable images: scored without them, counted in the report
        skipped = result.report["skipped"]
        raise PartialRun(f"scored without {skipped.get('missing images', 0)} missing and "
                         f"{skipped.get('unreadable images', 0)} unreadable images", str(result.metrics),
                         "pass --images DIR, the folder the dataset's image paths are relative to")
