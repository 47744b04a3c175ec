"""`stylecap train`: text-only CLOSE training for a task."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app, option
from stylecap.options import ModelChoices as M
from stylecap.options import TrainOptions as T


@app.command()
def train(
    task: str = typer.Option("caption", help="caption | vqa | ve | news | style"),
    data: Path = typer.Option(..., help="Training data: a caption/sentence file, a dataset file, or a corpus folder."),
    out: Path = option(T, "out_dir"),
    clip: str = option(M, "clip"),
    lm: str = option(M, "lm"),
    steps: Optional[int] = option(T, "steps"),
    epochs: float = option(T, "epochs"),
    batch_size: int = option(T, "batch_size"),
    grad_accum: int = option(T, "grad_accum"),
    lr: float = option(T, "lr"),
    noise: Optional[str] = option(M, "noise"),
    adapter: str = option(M, "adapter"),
    gap: Optional[Path] = option(M, "gap"),
    prefix_len: int = option(M, "prefix_len"),
    mapper: str = option(M, "mapper"),
    full_finetune: bool = typer.Option(False, "--full-finetune", help="Train all LM weights instead of LoRA."),
    lora_r: int = option(M, "lora_r"),
    max_target_len: Optional[int] = option(M, "max_target_len"),
    seed: int = option(T, "seed"),
    checkpoint_every: int = option(T, "checkpoint_every"),
    mixed_precision: str = option(T, "mixed_precision"),
    resume: bool = option(T, "resume", "--resume"),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
    split: Optional[str] = typer.Option("train", help="Split to read from a multi-split file or folder (Karpathy, VQA, SNLI)."),
    mode: str = typer.Option("single", help="Captioning: single (caption → itself) | multiple (caption → its image's others)."),
    images: Optional[Path] = typer.Option(None, help="Image root the dataset's image paths are relative to."),
    captions: Optional[Path] = typer.Option(None, help="VQA: the images' captions (dataset_coco.json or captions_<split>.json), read as CLIP's text."),
    val: Optional[Path] = typer.Option(None, help="Validation data, evaluated after training into OUT/val "
                                       "(on images when --images is given, else on text)."),
    input: str = typer.Option("text", help="text (CLOSE) | images: train the image-trained reference on image vectors."),
) -> None:
    """Train a CLOSE model on text only; caption images with it afterwards."""
    from stylecap.core.tasks import ReadOptions
    from stylecap.workflows.pipeline import train_task

    choices = M(clip=clip, lm=lm, noise=noise, adapter=adapter, gap=gap, prefix_len=prefix_len, mapper=mapper,
                lora=not full_finetune, lora_r=lora_r, max_target_len=max_target_len)
    options = T(out_dir=out, steps=steps, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                seed=seed, checkpoint_every=checkpoint_every, mixed_precision=mixed_precision, resume=resume,
                progress=not quiet)
    read_options = ReadOptions(split=split, images=images, mode=mode, captions=captions)
    model_dir = train_task(task, data, choices, options, read_options, val=val, input=input)
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process under torchrun/accelerate
        typer.echo(f"model saved to {model_dir}")
