"""The one variant runner of the demo, `bench quality` and `gap sweep`: train a variant (or reuse it
when everything that made it is unchanged), caption held-out image vectors with it, score captions.

A variant is a training input (text, or images for the reference), a σ, a gap adapter (fitted from
pairs or from unpaired images, from how many images) and the memory levers it reads at test time.
Its run folder is keyed by a digest of every input that shapes the model — task, variant, data file (path,
size, mtime), split, CLIP weights, LM, step budget, seed, the fitted gap and the stylecap version —
so a rerun with anything changed trains afresh instead of reporting stale numbers, and an unchanged
rerun (or an interrupted one, from its checkpoints) reuses what is finished.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch

from stylecap import __version__
from stylecap.core.encoders import default_device, resolve_clip
from stylecap.core.metrics import caption_scores
from stylecap.core.model import load_model
from stylecap.core.tasks import Example, ReadOptions
from stylecap.options import ModelChoices, TrainOptions
from stylecap.paths import file_digest, text_digest
from stylecap.workflows.evaluate import predict
from stylecap.workflows.pipeline import train_task

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

NO_CHECKPOINTS = 10 ** 9  # variants are short: a killed one retrains rather than writing checkpoints


def plan() -> dict:
    """Grids, settings and target bars of the demo and the quality bench (``benchmarks/plan.toml``)."""
    return tomllib.loads((resources.files("stylecap.benchmarks") / "plan.toml").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Variant:
    name: str
    input: str = "text"  # text (CLOSE) | images (the image-trained reference)
    noise: float | str | None = None  # σ, "auto" (from the fitted gap) or None (the task's paper σ)
    adapter: str = "noise"
    projection: bool = False  # test time: read the memory projection of the image vector (no images needed)
    retrieve: int = 0  # the decoder reads this many retrieved training texts (no images needed)
    gap: str = "pairs"  # the gap is fitted from image–caption "pairs" or from "unpaired" images and texts
    images: int | None = None  # …with at most this many images (None: the whole pairs split)
    regime: str = ""  # what the user has: "no images", "unpaired images", "pairs" (for the report)

    @classmethod
    def from_plan(cls, name: str, entry: dict) -> "Variant":
        noise = entry.get("noise")
        return cls(name, entry.get("input", "text"), None if noise == "task" else noise, entry.get("adapter", "noise"),
                   entry.get("projection", False), entry.get("retrieve", 0), entry.get("gap", "pairs"),
                   entry.get("images"), entry.get("regime", ""))

    @property
    def needs_gap(self) -> bool:
        return self.noise == "auto" or self.adapter != "noise"


def plan_variants(group: str) -> dict[str, Variant]:
    return {name: Variant.from_plan(name, entry) for name, entry in plan()["variants"][group].items()}


@dataclass
class Budget:
    """What every variant of one comparison shares."""

    clip: str = "world"
    lm: str = "tiny-t5"
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    lora: bool = False  # the world's LM starts from random weights: nothing for LoRA to preserve
    max_target_len: int | None = None
    progress: bool = True


def train_variant(task: str, variant: Variant, data: Path, read: ReadOptions | None, budget: Budget,
                  gap_dir: Path | None, root: Path) -> Path:
    """The model folder of ``variant`` trained on ``data`` under ``root``: reused when finished,
    resumed from its checkpoints when interrupted, else trained."""
    run = root / f"{task}-{variant.name}-{run_key(task, variant, data, read, budget, gap_dir)}"
    if (run / "model" / "stylecap.json").exists():
        return run / "model"
    gap = gap_dir if variant.needs_gap else None
    choices = ModelChoices(clip=budget.clip, lm=budget.lm, noise=variant.noise, adapter=variant.adapter, gap=gap,
                           lora=budget.lora, max_target_len=budget.max_target_len,
                           memory_projection=variant.projection, retrieve=variant.retrieve)
    # Full precision: the comparisons' numbers must not depend on whether a CPU computes bf16 natively
    # (`--mixed-precision auto` would choose by it), so README's figures hold on every machine.
    options = TrainOptions(out_dir=run, steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr,
                           seed=budget.seed, checkpoint_every=NO_CHECKPOINTS, progress=budget.progress,
                           resume=(run / "checkpoints").exists(), mixed_precision="no")
    return train_task(task, data, choices, options, read, input=variant.input)


def run_key(task: str, variant: Variant, data: Path, read: ReadOptions | None, budget: Budget,
            gap_dir: Path | None) -> str:
    """A digest of everything that shapes the trained model."""
    stat = os.stat(data)
    parts = {"task": task, "variant": asdict(variant), "data": [str(Path(data).resolve()), stat.st_size, stat.st_mtime_ns],
             "read": json.loads(json.dumps(asdict(read), default=str)) if read else None,
             "clip": resolve_clip(budget.clip).identity, "budget": {**asdict(budget), "progress": None},
             "gap": file_digest(Path(gap_dir)) if gap_dir and variant.needs_gap else None, "version": __version__}
    return text_digest([json.dumps(parts, sort_keys=True, default=str)])[:12]


def caption_vectors(model_dir: Path, vectors: torch.Tensor, examples: list[Example], num_beams: int = 1,
                    progress: bool = True, rerank: int = 0, encoder=None) -> list[str]:
    """The model's caption of each image vector (greedy by default, as the benches score; with
    ``rerank`` N, the best of N samples by ``encoder``, the CLIP that made the vectors)."""
    model = load_model(model_dir, default_device())
    outputs = predict(model, vectors, examples, num_beams=num_beams, progress=progress, rerank=rerank, encoder=encoder)
    return [text for text, _ in outputs]


def coco_scores(captions: dict, refs: dict) -> dict:
    """CIDEr-D and BLEU-4 as fractions (as coco-caption returns them; tables print them as they are)."""
    scores, _ = caption_scores(captions, {key: refs[key] for key in captions}, meteor=False, spice=False)
    return {"cider": scores["CIDEr-D"], "bleu4": scores["BLEU-4"]}
