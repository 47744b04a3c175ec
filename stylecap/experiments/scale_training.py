"""The stages of `stylecap bench scale` that need torch, each run in its own process by
:func:`stylecap.experiments.scale.run_stage`: the embedding cache build and `stylecap train` itself.
Apart from :mod:`stylecap.experiments.scale` so that the read and corpus stages are measured without
torch's few hundred MB loaded, as `generate` runs."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from stylecap.core.encoders import load_clip
from stylecap.core.tasks import ReadOptions, get_task, with_field
from stylecap.core.train import TrainOptions
from stylecap.core.vectors import EmbeddingCache
from stylecap.experiments.scale import folder_mb, spilled_mb, stage_main
from stylecap.options import ModelChoices
from stylecap.paths import cache_root
from stylecap.workflows.pipeline import rows_from_examples, train_task


def cache_stage(karpathy: str, clip: str, **_) -> dict:
    """CLIP text vectors of the file's distinct captions, into the embedding cache, as `stylecap train`
    builds it (the seconds are the encoding's; the file is read first, as train reads it)."""
    task = get_task("caption")
    examples = with_field(task.read(Path(karpathy), ReadOptions(split="train")), "clip_text", karpathy,
                          task.clip_text_hint)
    texts, _ = rows_from_examples(examples)
    encoder = load_clip(clip)
    started = time.perf_counter()
    vectors = EmbeddingCache(encoder).view(texts)
    seconds = time.perf_counter() - started
    embeddings = folder_mb(cache_root() / "embeddings")
    return {"seconds": seconds, "texts": len(texts), "dim": int(vectors.shape[1]), "embeddings_mb": embeddings,
            "mapped_mb": embeddings + spilled_mb()}


def train_stage(karpathy: str, clip: str, steps: int, batch_size: int, run: str, **_) -> dict:
    """`stylecap train --task caption` on the file (its vectors already cached), ``steps`` steps."""
    options = TrainOptions(out_dir=Path(run), steps=steps, batch_size=batch_size, checkpoint_every=steps + 1,
                           log_every=max(1, steps // 5), progress=False)
    started = time.perf_counter()
    train_task("caption", Path(karpathy), ModelChoices(clip=clip, lm="tiny-t5"), options, ReadOptions(split="train"))
    return {"seconds": time.perf_counter() - started, "steps": steps, "batch_size": batch_size,
            "mapped_mb": folder_mb(cache_root() / "embeddings") + spilled_mb()}


TRAINING = {"cache": cache_stage, "train": train_stage}

if __name__ == "__main__":
    stage_main(TRAINING, sys.argv[1:])
