"""`stylecap caption`: caption image files and folders with a trained model."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stylecap.cli import app


@app.command()
def caption(
    paths: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    model: Path = typer.Option(..., "--model", help="A model folder written by `stylecap train` (its model/)."),
    beam: Optional[int] = typer.Option(None, help="Beam width (default: the model's)."),
    max_length: Optional[int] = typer.Option(None, help="Max new tokens."),
    question: Optional[str] = typer.Option(None, help="Input text for VQA / entailment models."),
) -> None:
    """Caption images with a trained model."""
    from rich.console import Console
    from rich.table import Table

    from stylecap.caption import Decoding, caption_images

    results = caption_images(paths, model, Decoding(num_beams=beam, max_new_tokens=max_length), input_text=question)
    table = Table("image", "caption", "score")
    for row in results:
        table.add_row(row["path"], row["caption"], f"{row['score']:.3f}")
    Console().print(table)
