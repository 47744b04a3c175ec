"""`stylecap train`: text-only CLOSE training for a task."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app


@app.command()
def train(
    task: str = typer.Option("caption", help="caption | vqa | ve | news | style"),
    data: Path = typer.Option(..., help="Training data: a caption/sentence file, a dataset file, or a corpus folder."),
    out: Path = typer.Option(Path("runs/model"), help="Run folder (checkpoints, metrics, final model/)."),
    clip: str = typer.Option("world", help="CLIP: 'world' (built-in), NAME:TAG (e.g. ViT-L-14:openai), or a folder."),
    lm: str = typer.Option("tiny-t5", help="Language model: a hub name (t5-base, gpt2), a folder, or tiny-t5 / tiny-gpt2."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps (default: from --epochs)."),
    epochs: float = typer.Option(1.0, help="Passes over the data when --steps is not given."),
    batch_size: int = typer.Option(32, help="Examples per micro-batch and process."),
    grad_accum: int = typer.Option(1, help="Micro-batches per optimiser step."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (AdamW, warmup then linear decay)."),
    noise: Optional[str] = typer.Option(None, help="Noise σ per dimension, or 'auto' (from --gap statistics; "
                                        "default: the task's σ scaled to the CLIP width)."),
    adapter: str = typer.Option("noise", help="Gap adapter: noise | mean-shift | linear | covariance."),
    gap: Optional[Path] = typer.Option(None, help="Fitted gap statistics folder from `stylecap gap fit`."),
    prefix_len: int = typer.Option(4, help="Prefix embeddings the CLIP vector becomes."),
    mapper: str = typer.Option("linear", help="Prefix mapper: linear | mlp."),
    full_finetune: bool = typer.Option(False, "--full-finetune", help="Train all LM weights instead of LoRA."),
    lora_r: int = typer.Option(16, help="LoRA rank."),
    max_target_len: Optional[int] = typer.Option(None, help="Max target tokens (default: the task's)."),
    seed: int = typer.Option(0, help="Random seed (data order, noise, init)."),
    checkpoint_every: int = typer.Option(500, help="Save a resumable checkpoint every N steps."),
    mixed_precision: str = typer.Option("auto", help="auto (bf16 on capable GPUs) | no | bf16 | fp16."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
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
    from stylecap.gap import parse_noise
    from stylecap.pipeline import ModelChoices, train_task
    from stylecap.tasks import ReadOptions
    from stylecap.train import TrainOptions

    choices = ModelChoices(clip=clip, lm=lm, noise=parse_noise(noise), adapter=adapter, gap=gap, prefix_len=prefix_len,
                           mapper=mapper, lora=not full_finetune, lora_r=lora_r, max_target_len=max_target_len)
    options = TrainOptions(out_dir=out, steps=steps, epochs=epochs, batch_size=batch_size, grad_accum=grad_accum,
                           lr=lr, seed=seed, checkpoint_every=checkpoint_every, mixed_precision=mixed_precision,
                           resume=resume, progress=not quiet)
    read_options = ReadOptions(split=split, images=images, mode=mode, captions=captions)
    model_dir = train_task(task, data, choices, options, read_options, val=val, input=input)
    if os.environ.get("RANK", "0") == "0":  # one line, not one per process under torchrun/accelerate
        typer.echo(f"model saved to {model_dir}")
