"""`stylecap bench train` and `stylecap bench scale`: training speed against the paper's path, and
cost as the number of captions grows."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import option
from stylecap.cli.bench import bench_app
from stylecap.options import ScaleBench as S
from stylecap.options import TrainBench as T


@bench_app.command("train")
def bench_train_command(
    size: str = option(T, "size"),
    steps: Optional[int] = option(T, "steps"),
    warmup_steps: int = option(T, "warmup_steps"),
    batch_size: int = option(T, "batch_size"),
    coco_captions: int = option(T, "coco_captions"),
    threads: Optional[int] = option(T, "threads"),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the results as JSON here."),
) -> None:
    """Samples/s of `stylecap train` against the paper's training path, same data, model and batches.

    Ours reads cached text vectors and trains LoRA (bf16 where the GPU has it); the reference encodes
    each batch through the CLIP text tower at every step, in fp32, and trains every LM weight. Also
    estimates a COCO-sized job (1 epoch) from the rates measured in the run."""
    from stylecap.experiments.train_speed import bench_train

    bench_train(T(size=size, steps=steps, warmup_steps=warmup_steps, batch_size=batch_size,
                  coco_captions=coco_captions, threads=threads), report)


@bench_app.command("scale")
def bench_scale_command(
    sizes: str = option(S, "sizes"),
    out: Path = option(S, "out"),
    clip: str = option(S, "clip"),
    train_steps: int = option(S, "train_steps"),
    batch_size: int = option(S, "batch_size"),
    seed: int = option(S, "seed"),
    stages: str = option(S, "stages"),
    threads: Optional[int] = option(S, "threads"),
) -> None:
    """Time and peak memory of reading, embedding, training and the corpus pass as captions grow.

    Each stage at each size runs in a fresh process; writes scale.json and scale.png into --out."""
    from stylecap.experiments.scale import bench_scale

    bench_scale(S(sizes=sizes, out=out, clip=clip, train_steps=train_steps, batch_size=batch_size, seed=seed,
                  stages=stages, threads=threads))
