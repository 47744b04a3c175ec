"""`stylecap gap fit | analyze | sweep`: measure a CLIP's modality gap and fit the adapters that cross it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app
from stylecap.options import parse_noise

gap_app = typer.Typer(help="Measure the image–text gap of a CLIP, fit gap adapters, sweep σ / adapters.",
                      no_args_is_help=True)
app.add_typer(gap_app, name="gap")

CLIP_HELP = "CLIP: 'world' (built-in), NAME:TAG (e.g. ViT-L-14:openai), or a folder."
PAIRS_HELP = "Image–caption pairs: JSONL of {\"image\", \"caption\"} or a Karpathy dataset_coco.json."
IMAGES_HELP = "Folder the pairs' image paths start from (default: the pairs file's folder)."


def _source(clip: str, pairs: Path, images: Optional[Path], split: Optional[str], limit: Optional[int], quiet: bool):
    from stylecap.workflows.gap_analysis import PairSource

    return PairSource(clip=clip, pairs=pairs, images=images, split=split, limit=limit, progress=not quiet)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@gap_app.command()
def fit(
    pairs: Optional[Path] = typer.Option(None, help=PAIRS_HELP),
    texts: Optional[Path] = typer.Option(None, help="Without pairs: a caption file (.txt, .jsonl, Karpathy .json) or "
                                                    "corpus folder, not paired with --images (e.g. the training "
                                                    "captions)."),
    out: Path = typer.Option(Path("runs/gap"), help="Gap folder to write (gap.json + <adapter>.safetensors)."),
    clip: str = typer.Option("world", help=CLIP_HELP),
    images: Optional[Path] = typer.Option(None, help=IMAGES_HELP + " Without pairs (--texts): the folder of "
                                                     "images itself, walked recursively."),
    split: Optional[str] = typer.Option(None, help="Only pairs (or --texts captions) of this split "
                                                   "(Karpathy 'split' / JSONL 'split')."),
    limit: Optional[int] = typer.Option(None, help="At most this many images."),
    adapters: Optional[str] = typer.Option(None, help="Adapters to fit, comma-separated (default: mean-shift,linear,"
                                                      "covariance from pairs; mean-shift,coral,pseudo-linear without)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Fit the gap adapters on image–caption pairs, or on images and texts that are not paired
    (--images DIR --texts FILE); `stylecap train --adapter KIND --gap OUT` uses them."""
    from stylecap.errors import UsageError
    from stylecap.workflows.gap_analysis import UnpairedSource, fit_gap, fit_unpaired_gap

    if (pairs is None) == (texts is None):
        raise UsageError("give --pairs (image–caption pairs) or --texts with --images (unpaired sets)", None,
                         "e.g. stylecap gap fit --images photos/ --texts captions.txt")
    kinds = _csv(adapters) if adapters else None
    if texts is not None:
        if images is None:
            raise UsageError("--texts needs --images, the folder of images to fit against", "--images")
        meta = fit_unpaired_gap(UnpairedSource(clip=clip, images=images, texts=texts, split=split, limit=limit,
                                               progress=not quiet), out, kinds)
    else:
        meta = fit_gap(_source(clip, pairs, images, split, limit, quiet), out, kinds)
    stats = meta["statistics"]
    auto = meta["noise"]["auto_sigma"]
    counted = (f"{stats['pairs']} pairs, {stats['images']} images" if meta.get("pairs") else
               f"{stats['images']} images, {stats['texts']} texts, not paired")
    typer.echo(f"{counted}: cos(image, caption) {stats['cos_image_caption']:.3f}"
               + (" (estimated: nearest text)" if not meta.get("pairs") else "")
               + ", auto σ " + (f"{auto:.4f}" if auto is not None else "n/a"))
    for kind, fit_stats in meta["adapters"].items():
        typer.echo(f"  {kind}: " + ", ".join(f"{k} {v:.4g}" for k, v in fit_stats.items()
                                              if isinstance(v, (int, float))))
    typer.echo(f"gap saved to {out}")


@gap_app.command()
def analyze(
    pairs: Path = typer.Option(..., help=PAIRS_HELP),
    out: Path = typer.Option(Path("runs/gap-analysis"), help="Folder for analysis.json and the PNG plots."),
    clip: str = typer.Option("world", help=CLIP_HELP),
    images: Optional[Path] = typer.Option(None, help=IMAGES_HELP),
    split: Optional[str] = typer.Option(None, help="Only pairs of this split."),
    limit: Optional[int] = typer.Option(None, help="At most this many images."),
    noise: Optional[float] = typer.Option(None, help="σ for the adapter plots (default: the auto σ)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Print and save the gap statistics of a CLIP on pairs, with PCA, correlation and projection plots."""
    from stylecap.workflows.gap_analysis import analyze_gap

    report = analyze_gap(_source(clip, pairs, images, split, limit, quiet), out, noise)
    typer.echo(json.dumps({"statistics": report["statistics"], "noise": report["noise"],
                           "adapters_in_sample": report["adapters_in_sample"]}, indent=2))
    typer.echo(f"report and plots saved to {out}")


@gap_app.command()
def sweep(
    train: Path = typer.Option(..., help="Training captions (pairs file; only the captions are read)."),
    test: Path = typer.Option(..., help="Held-out image–caption pairs to score on (CIDEr-D)."),
    pairs: Optional[Path] = typer.Option(None, help="Pairs to fit the gap on (needed for fitted adapters / auto σ)."),
    out: Path = typer.Option(Path("runs/gap-sweep"), help="Sweep folder (one run per setting, sweep.json, sweep.md)."),
    clip: str = typer.Option("world", help=CLIP_HELP),
    lm: str = typer.Option("tiny-t5", help="Language model for every run."),
    images: Optional[Path] = typer.Option(None, help=IMAGES_HELP),
    train_split: Optional[str] = typer.Option("train", help="Split of --train (when its records name splits)."),
    test_split: Optional[str] = typer.Option("test", help="Split of --test."),
    pairs_split: Optional[str] = typer.Option("pairs", help="Split of --pairs."),
    sigmas: str = typer.Option("0,auto", help="Noise levels for the noise adapter, comma-separated (σ or 'auto')."),
    adapters: str = typer.Option("", help="Fitted adapters to add, e.g. mean-shift,linear,covariance."),
    adapter_noise: str = typer.Option("auto", help="σ used with the fitted adapters (σ or 'auto')."),
    image_trained: bool = typer.Option(False, "--image-trained", help="Add a reference model trained on images."),
    steps: int = typer.Option(500, help="Optimiser steps per run."),
    batch_size: int = typer.Option(32, help="Batch size per run."),
    lr: float = typer.Option(1e-3, help="Peak learning rate per run."),
    full_finetune: bool = typer.Option(False, "--full-finetune", help="Train all LM weights instead of LoRA "
                                                                       "(for LMs that start from random weights)."),
    max_target_len: Optional[int] = typer.Option(None, help="Max caption tokens (default: the task's)."),
    num_beams: int = typer.Option(1, help="Beams when captioning the test images."),
    test_limit: Optional[int] = typer.Option(None, help="At most this many test images."),
    seed: int = typer.Option(0, help="Seed of every run."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Train the same text-only captioner per σ / adapter and tabulate held-out image CIDEr."""
    from stylecap.experiments.sweep import SweepSpec, format_table, run_sweep

    spec = SweepSpec(clip=clip, lm=lm, train=train, test=test, pairs=pairs, images=images, train_split=train_split,
                     test_split=test_split, pairs_split=pairs_split, sigmas=[parse_noise(s) for s in _csv(sigmas)],
                     adapters=_csv(adapters), adapter_noise=parse_noise(adapter_noise), image_trained=image_trained,
                     steps=steps, batch_size=batch_size, lr=lr, lora=not full_finetune,
                     max_target_len=max_target_len, num_beams=num_beams, test_limit=test_limit,
                     seed=seed, progress=not quiet)
    rows = run_sweep(spec, out)
    typer.echo(format_table(rows))
    typer.echo(f"sweep saved to {out}")
