"""`stylecap caption`: caption image files and folders with a trained model; `stylecap bench caption`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from stylecap.cli import app, option
from stylecap.cli.bench import bench_app
from stylecap.errors import PartialRun
from stylecap.options import Decoding as D
from stylecap.options import Loading as L


@app.command()
def caption(
    paths: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
    model: Optional[Path] = typer.Option(None, "--model", envvar="STYLECAP_MODEL",
                                         help="A model folder written by `stylecap train` (its model/, or the run folder), or "
                                              "hf-hub:ORG/NAME. Default: STYLECAP_MODEL, else the model trained "
                                              "or demoed last on this machine, else the shipped shapes-world captioner."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write records to a .jsonl or .csv file (path, caption, score, model, error)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write an HTML gallery (thumbnails + captions)."),
    resume: bool = typer.Option(False, "--resume", help="Skip images already in --out and append the rest."),
    beam: Optional[int] = option(D, "num_beams"),
    max_length: Optional[int] = option(D, "max_new_tokens"),
    sample: bool = option(D, "do_sample"),
    temperature: float = option(D, "temperature"),
    top_p: Optional[float] = option(D, "top_p"),
    num_captions: int = option(D, "num_return_sequences"),
    rerank: int = option(D, "rerank"),
    question: Optional[str] = typer.Option(None, "--question", help="The question, for a VQA model."),
    hypothesis: Optional[str] = typer.Option(None, "--hypothesis", help="The hypothesis, for a visual-entailment model."),
    context: Optional[Path] = typer.Option(None, "--context", help="A text file with the article, for a visual-news model."),
    batch_size: int = option(L, "batch_size"),
    workers: Optional[int] = option(L, "num_workers"),
    max_pixels: int = option(L, "max_pixels"),
    device: Optional[str] = option(L, "device"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar and no table; the summary only."),
) -> None:
    """Caption images with a trained model. Exit codes: 0 all captioned; 6 finished, some images failed
    (each has a record with its reason); 2 bad option; 3 no images / a path missing or unreadable; 4 model cannot be
    loaded; 130 interrupted (add --resume to continue)."""
    from stylecap.cli import err_console
    from stylecap.workflows.caption import TaskInput, caption_images
    from stylecap.workflows.defaults import choose_model
    from stylecap.workflows.shards import first_process

    # options are checked before a model is chosen and named
    decoding = D(num_beams=beam, max_new_tokens=max_length, do_sample=sample, temperature=temperature, top_p=top_p,
                 num_return_sequences=num_captions, rerank=rerank)
    loading = L(batch_size, workers, max_pixels, device)
    given = {"question": question, "hypothesis": hypothesis, "context": context}
    chosen = choose_model(model, next((name for name, value in given.items() if value is not None), None))
    if chosen.line and first_process():  # a model the user did not name: say which (once)
        err_console.print(chosen.line, markup=False, highlight=False)
    report = caption_images(
        paths, chosen.model, decoding, TaskInput(question, hypothesis, context), out=out, html=html, resume=resume,
        loading=loading, progress=not quiet, table=not quiet)
    # In a run launched in several processes the first speaks for all (one error line, exit 6); the
    # others end with 0. torchrun then exits 1, as it does for any process that failed.
    if report.failed and report.main:
        raise PartialRun(f"{report.failed} input(s) could not be captioned", None,
                         "each has a record with its reason; fix or remove them and add --resume to finish")


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
    from stylecap.experiments.speed import CaptionBench
    from stylecap.experiments.speed import bench_caption as run

    run(CaptionBench(images=images, image_size=image_size, folder=folder, paper_size=paper_size, model=model,
                     num_beams=beam, batch_size=batch_size, reference_batch_size=reference_batch_size,
                     num_workers=workers, device=device), report)
