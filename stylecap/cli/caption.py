"""`stylecap caption`: caption image files and folders with a trained model; `stylecap bench caption`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stylecap.caption import DEFAULT_MAX_PIXELS  # a constant; the module imports no torch
from stylecap.cli import app
from stylecap.cli.bench import bench_app


@app.command()
def caption(
    paths: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    model: Optional[Path] = typer.Option(None, "--model", envvar="STYLECAP_MODEL",
                                         help="A model folder written by `stylecap train` (its model/, or the run folder)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write records to a .jsonl or .csv file (path, caption, score, model, error)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write an HTML gallery (thumbnails + captions)."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in --out and append the rest."),
    beam: Optional[int] = typer.Option(None, "--beam", min=1, help="Beam width (default: the model's)."),
    max_length: Optional[int] = typer.Option(None, "--max-length", min=1, help="Max new tokens per caption."),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of beam search."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (with --sample)."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="Nucleus sampling mass (with --sample)."),
    num_captions: int = typer.Option(1, "--num-captions", min=1, help="Captions per image, best first."),
    question: Optional[str] = typer.Option(None, "--question", help="The question, for a VQA model."),
    hypothesis: Optional[str] = typer.Option(None, "--hypothesis", help="The hypothesis, for a visual-entailment model."),
    context: Optional[Path] = typer.Option(None, "--context", help="A text file with the article, for a visual-news model."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Image decoding processes (default: cores - 1, at most 8)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", min=1, help="Refuse images with more pixels (decompression-bomb guard)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 … (default: cuda when available)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar and no table; the summary only."),
) -> None:
    """Caption images with a trained model. Exit codes: 0 all captioned; 6 finished, some images failed
    (each has a record with its reason); 2 bad option; 3 no images / path missing; 4 model cannot be loaded."""
    from stylecap.caption import Decoding, Loading, TaskInput, caption_images

    report = caption_images(
        paths, model,
        Decoding(num_beams=beam, max_new_tokens=max_length, do_sample=sample, temperature=temperature, top_p=top_p,
                 num_return_sequences=num_captions),
        TaskInput(question, hypothesis, context), out=out, html=html, resume=resume,
        loading=Loading(batch_size, workers, max_pixels, device), progress=not quiet, table=not quiet)
    raise typer.Exit(report.exit_code)


@bench_app.command("caption")
def bench_caption(
    images: int = typer.Option(64, "--images", min=1, help="Synthetic photos to caption (JPEG)."),
    image_size: str = typer.Option("1600x1200", "--image-size", help="Synthetic photo size, WIDTHxHEIGHT."),
    folder: Optional[Path] = typer.Option(None, "--folder", help="Caption these images instead of synthetic ones."),
    paper_size: bool = typer.Option(False, "--paper-size", help="ViT-L/14 + t5-base shapes, random weights (GPU)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Benchmark a trained model folder instead."),
    beam: int = typer.Option(5, "--beam", min=1, help="Beam width, the same for both paths."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Our batch size."),
    reference_batch_size: int = typer.Option(8, "--reference-batch-size", min=1, help="The reference path's batch size."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Our decoding processes."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda … (default: cuda when available)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the results as JSON here."),
) -> None:
    """Images/s of `stylecap caption` against a reference path modelled on the paper's code
    (fp32, small batches, every image decoded into one list first), in the same run."""
    from stylecap.bench import CaptionBench, bench_caption as run

    run(CaptionBench(images=images, image_size=image_size, folder=folder, paper_size=paper_size, model=model,
                     num_beams=beam, batch_size=batch_size, reference_batch_size=reference_batch_size,
                     num_workers=workers, device=device), report)
