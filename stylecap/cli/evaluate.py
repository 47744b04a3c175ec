"""`stylecap eval`: score a trained model on a task's data, on images or on text."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app, option
from stylecap.core.images import path_text
from stylecap.errors import PartialRun, printable
from stylecap.options import Decoding as D


@app.command("eval")
def eval_command(
    model: Path = typer.Option(..., "--model", help="A model folder written by `stylecap train` (its model/)."),
    data: Path = typer.Option(..., help="Evaluation data in the task's public format (file or folder), a `datasets` "
                                        "folder or parquet file, or hf:ORG/NAME[:SPLIT]."),
    input: str = typer.Option("images", help="images (the paper's protocol) | text (the CLIP text the task gives)."),
    split: Optional[str] = typer.Option("test", help="Split of a multi-split file or folder (Karpathy, VQA, SNLI)."),
    images: Optional[Path] = typer.Option(None, help="Image root the dataset's image paths are relative to."),
    captions: Optional[Path] = typer.Option(None, help="VQA on text: the images' captions (dataset_coco.json or captions_<split>.json)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: RUN/eval/SPLIT-INPUT beside the model)."),
    limit: Optional[int] = typer.Option(None, help="Evaluate only the first N items."),
    batch_size: int = typer.Option(32, help="Items decoded per batch."),
    beam: Optional[int] = typer.Option(None, help="Beam width (default: the model's)."),
    rerank: int = option(D, "rerank"),
    meteor: bool = typer.Option(True, "--meteor/--no-meteor", help="Compute METEOR (captioning; slow to start)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Write predictions (JSONL) and metrics (JSON) for a model on a task's data, and print the scores."""
    from rich.console import Console

    from stylecap.workflows.evaluate import evaluate, metrics_table

    D(num_beams=beam, rerank=rerank)  # checked before a hub dataset is converted (evaluate() checks it too)
    data, split, images = _dataset_files(model, data, split, images, input)
    result = evaluate(model, data, input=input, split=split, images=images, captions=captions, out=out, limit=limit,
                      batch_size=batch_size, num_beams=beam, meteor=meteor, progress=not quiet, rerank=rerank)
    Console().print(metrics_table(result.report))
    typer.echo(printable(f"predictions: {path_text(result.predictions)}"))
    typer.echo(printable(f"metrics: {path_text(result.metrics)}"))
    if result.incomplete:  # missing or unreadable images: scored without them, counted and named in the report
        _name_failures(result.failures)
        skipped = result.report["skipped"]
        raise PartialRun(f"scored without {skipped.get('missing images', 0)} missing and "
                         f"{skipped.get('unreadable images', 0)} unreadable images (all listed under "
                         "'failures')", str(result.metrics),
                         "pass --images DIR, the folder the dataset's image paths are relative to, or fix or "
                         "remove the unreadable files")


SHOWN_FAILURES = 20  # images named on stderr; metrics.json lists every one


def _name_failures(failures: list[dict]) -> None:
    from rich.text import Text

    from stylecap.cli import err_console

    for failure in failures[:SHOWN_FAILURES]:
        name = failure.get("image") or f"item {failure.get('item')}"
        err_console.print(Text(printable(f"{failure['reason']}: {name}")))
    if len(failures) > SHOWN_FAILURES:
        err_console.print(Text(f"… and {len(failures) - SHOWN_FAILURES} more"))


def _dataset_files(model: Path, data: Path, split: Optional[str], images: Optional[Path], input: str):
    """A `datasets` folder, parquet file or hf: name as the files the model's task reader knows (its
    pictures written out, into the images/ folder the readers look for beside their files, when
    scoring on images and no --images is given)."""
    from stylecap.core.model import read_model_meta
    from stylecap.core.tasks.hub_data import is_dataset, task_files

    if not is_dataset(data):
        return data, split, images
    task = read_model_meta(model)["config"]["task"]
    converted = task_files(data, task, split, with_images=input == "images" and images is None)
    return converted.path, converted.split, images  # written pictures lie in images/ beside the files
