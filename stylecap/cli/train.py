"""`stylecap train`: text-only CLOSE training for a task (on the built-in shapes world without --data)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app, err_console, option
from stylecap.options import ModelChoices as M
from stylecap.options import TrainOptions as T


@app.command()
def train(
    task: str = typer.Option("caption", help="caption | vqa | ve | news | style"),
    data: Optional[Path] = typer.Option(None, help="Training data: a caption/sentence file, a dataset file or folder, a "
                                                   "corpus folder, a `datasets` folder or parquet file, or "
                                                   "hf:ORG/NAME[:SPLIT]. Default: the built-in shapes world's files "
                                                   "for the task (scored on its held-out images at the end)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (checkpoints, metrics, final model/); "
                                                            "default runs/TASK."),
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
    memory_projection: bool = option(M, "memory_projection", "--memory-projection"),
    projection_tau: float = option(M, "projection_tau"),
    projection_k: int = option(M, "projection_k"),
    retrieve: int = option(M, "retrieve"),
    memory_size: Optional[int] = option(M, "memory_size"),
    prefix_len: int = option(M, "prefix_len"),
    mapper: str = option(M, "mapper"),
    full_finetune: bool = typer.Option(False, "--full-finetune", help="Train all LM weights instead of LoRA."),
    lora_r: int = option(M, "lora_r"),
    max_target_len: Optional[int] = option(M, "max_target_len"),
    seed: int = option(T, "seed"),
    checkpoint_every: int = option(T, "checkpoint_every"),
    log_every: int = option(T, "log_every"),
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
    """Train a CLOSE model on text only; caption images with it afterwards. Without --data it trains on
    the built-in shapes world and scores the model on the world's held-out images."""
    from stylecap.core.tasks import ReadOptions
    from stylecap.workflows.defaults import remember_model
    from stylecap.workflows.pipeline import train_task
    from stylecap.workflows.shards import first_process

    choices = M(clip=clip, lm=lm, noise=noise, adapter=adapter, gap=gap, prefix_len=prefix_len, mapper=mapper,
                lora=not full_finetune, lora_r=lora_r, max_target_len=max_target_len,
                memory_projection=memory_projection, projection_tau=projection_tau, projection_k=projection_k,
                retrieve=retrieve, memory_size=memory_size)
    options = T(out_dir=out or Path("runs") / task, steps=steps, epochs=epochs, batch_size=batch_size,
                grad_accum=grad_accum, lr=lr, seed=seed, checkpoint_every=checkpoint_every, log_every=log_every,
                mixed_precision=mixed_precision, resume=resume, progress=not quiet)
    read_options = ReadOptions(split=split, images=images, mode=mode, captions=captions)
    world = None
    if data is None:
        world, data, val, choices, options, read_options = _world_defaults(task, choices, options, mode)
    else:
        data, val, read_options, choices = _hub_datasets(task, data, val, read_options, choices)
    model_dir = train_task(task, data, choices, options, read_options, val=val, input=input)
    if not first_process():  # one report, not one per process under torchrun/accelerate
        return
    if world is not None and task == "style":
        from stylecap.experiments.world_defaults import score_style

        score_style(model_dir, world, Path(options.out_dir) / "val", progress=options.progress)
    _print_validation(Path(options.out_dir) / "val" / "metrics.json", val is not None or world is not None)
    remember_model(model_dir, "stylecap train")
    typer.echo(f"model saved to {model_dir}")


def _world_defaults(task: str, choices, options, mode: str):
    """No --data: the built-in world's files for the task, the world recipe for options left at their
    defaults, and one line saying so."""
    from dataclasses import replace

    from stylecap.experiments.world_defaults import recipe_line, with_recipe, world_data

    world = world_data(task)
    choices, options = with_recipe(choices, options, task)
    choices = replace(choices, extra={**choices.extra, "dataset": world.provenance})
    err_console.print(recipe_line(world, choices, options))
    read_options = replace(world.read, mode=mode)
    return world.world, world.data, world.val, choices, options, read_options


def _hub_datasets(task: str, data: Path, val: Optional[Path], read_options, choices):
    """`datasets` folders, parquet files and hf:ORG/NAME names as the files the task's reader knows."""
    from dataclasses import replace

    from stylecap.core.tasks.hub_data import is_dataset, task_files

    if is_dataset(data):
        converted = task_files(data, task, read_options.split, with_images=False)
        data, read_options = converted.path, replace(read_options, split=converted.split)
        choices = replace(choices, extra={**choices.extra, "dataset": converted.provenance})
    if read_options.captions is not None and is_dataset(read_options.captions):
        read_options = replace(read_options, captions=task_files(read_options.captions, "caption", None,
                                                                 with_images=False).path)
    if val is not None and is_dataset(val):
        val = task_files(val, task, "val", with_images=read_options.images is not None).path
    return data, val, read_options, choices


def _print_validation(metrics: Path, expected: bool) -> None:
    """The held-out scores (``--val``, or the world's val images), as `stylecap eval` prints them."""
    if not expected or not metrics.is_file():
        return
    from rich.console import Console

    from stylecap.workflows.evaluate import metrics_table

    Console().print(metrics_table(json.loads(metrics.read_text())))
