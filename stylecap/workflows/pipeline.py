"""Wiring for `stylecap train`: task files → examples → cached CLIP text vectors → the training loop."""
from __future__ import annotations

import math
import sys
from array import array
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from stylecap.core.encoders import BUILTIN_CLIPS, ClipEncoder, load_clip
from stylecap.core.gap import gap_provenance, load_fitted_adapter, resolve_noise
from stylecap.core.lms import load_lm
from stylecap.core.memory import RetrievalRows, memory_from_examples, memory_settings
from stylecap.core.model import CloseConfig, CloseModel, build_model, fit_lengths
from stylecap.core.tasks import Examples, ReadOptions, get_task, with_field
from stylecap.core.train import Row, TrainOptions, train
from stylecap.core.vectors import image_vectors, mapped_text_vectors
from stylecap.errors import UsageError
from stylecap.options import ModelChoices
from stylecap.paths import text_digest
from stylecap.workflows.evaluate import evaluate
from stylecap.workflows.model_card import write_model_card
from stylecap.workflows.shards import first_process

PAPER_CLIP_DIM = 768  # ViT-L/14, the CLIP the paper's noise levels were tuned for


def default_noise(task_noise: float, clip_dim: int) -> float:
    """The paper's σ (tuned at D = 768) rescaled so cos(noisy, clean) ≈ 1/√(1+σ²D) stays the same at D."""
    return task_noise * math.sqrt(PAPER_CLIP_DIM / clip_dim)


def canonical_clip_spec(spec: str) -> str:
    """Make local paths in a CLIP spec absolute, so a saved model finds its CLIP from anywhere."""
    if spec in BUILTIN_CLIPS:  # loaded as the built-in whatever lies in the working folder under that name
        return spec
    head, sep, tail = spec.partition(":")
    if Path(spec).exists():
        return str(Path(spec).resolve())
    if sep and tail and Path(tail).exists():
        head = str(Path(head).resolve()) if Path(head).exists() else head
        return f"{head}:{Path(tail).resolve()}"
    return spec


class ExampleRows(Sequence[Row]):
    """One training row per example, made on demand: the examples' compact columns are not copied."""

    def __init__(self, examples: Examples, vector_of: Sequence[int]):
        self.examples, self.vector_of = examples, vector_of

    def __getitem__(self, i: int) -> Row:
        field = self.examples.field
        return Row(vector=self.vector_of[i], target=field("target", i), input_text=field("input_text", i))

    def __len__(self) -> int:
        return len(self.examples)


def rows_from_examples(examples: Examples) -> tuple[list[str], ExampleRows]:
    """Unique CLIP texts (each encoded once) and one training row per example."""
    return examples.values("clip_text"), ExampleRows(examples, examples.codes("clip_text"))


def build_config(task_name: str, choices: ModelChoices, clip_dim: int, mode: str = "single") -> CloseConfig:
    task = get_task(task_name)
    noise = choices.noise if choices.noise is not None else default_noise(task.noise_for(mode), clip_dim)
    config = CloseConfig(
        clip=canonical_clip_spec(choices.clip), clip_dim=clip_dim, lm=choices.lm, task=task_name,
        prefix_len=choices.prefix_len, mapper=choices.mapper, adapter=choices.adapter, noise=noise,
        lora=choices.lora, lora_r=choices.lora_r, lora_alpha=2 * choices.lora_r,
        max_input_len=task.max_input_len, max_target_len=choices.max_target_len or task.max_target_len,
        generation={"num_beams": choices.num_beams or task.num_beams}, extra=dict(choices.extra),
        memory=memory_settings(choices.memory_projection, choices.projection_tau, choices.projection_k,
                               choices.retrieve))
    if choices.retrieve:  # the retrieved texts follow the task's own input text: room for them
        config.max_input_len += choices.retrieve * config.max_target_len
    return config


def train_task(task_name: str, data: Path, choices: ModelChoices, options: TrainOptions,
               read_options: ReadOptions | None = None, val: Path | None = None, input: str = "text") -> Path:
    """Text-only CLOSE training on a task's data files; returns the saved model folder.

    ``input="images"`` trains the image-trained reference instead (the same rows, the CLIP vectors
    of their images). ``val`` is evaluated after training (``<out>/val``): on images when
    ``read_options.images`` is given, else on text.
    """
    task = get_task(task_name)
    if input not in ("text", "images"):
        raise UsageError(f"unknown training input '{input}'", "--input", "choose text or images")
    read_options = read_options or ReadOptions()
    if choices.uses_memory and input != "text":
        raise UsageError("--memory-projection and --retrieve read the training texts' vectors", "--input images",
                         "use them with text-only training (--input text)")
    examples = task.read(Path(data), read_options)
    encoder = load_clip(choices.clip)
    noise, noise_auto = resolve_noise(choices.noise, choices.gap, encoder.dim, choices.adapter)  # "auto": from the gap
    config = build_config(task_name, replace(choices, noise=noise), encoder.dim, read_options.mode)
    # The LM and a fitted adapter are loaded (and refused when unsafe or broken) before any text is encoded.
    loaded = load_lm(choices.lm)
    config = fit_lengths(config, loaded, target_chosen=choices.max_target_len is not None)
    fitted = None
    if choices.gap or choices.adapter != "noise":
        fitted = load_fitted_adapter(choices.adapter, choices.gap, config.noise, encoder.dim)
    vectors, rows, examples = _training_vectors(encoder, examples, input, str(data), task.clip_text_hint, options)
    _report_skipped(examples, data)
    config.extra["read"] = {"split": read_options.split, "mode": read_options.mode, "trained_on": input,
                            "images": str(read_options.images) if read_options.images else None,
                            "captions": str(read_options.captions) if read_options.captions else None,
                            "skipped": dict(getattr(examples, "skipped", {}))}
    if noise_auto:
        config.extra["noise_auto"] = noise_auto
    if choices.gap:
        config.extra["gap"] = gap_provenance(choices.gap, choices.adapter, encoder.dim)
    config.extra.setdefault("data", str(Path(data).resolve()))
    config.extra.setdefault("examples", len(examples))
    torch.manual_seed(options.seed)  # the mapper's and LoRA's initial weights follow --seed
    model = build_model(config, loaded)
    if fitted is not None:
        model.adapter = fitted
    if choices.uses_memory:
        model, rows = _with_memory(model, examples, vectors, rows, choices, options.seed, encoder.identity)
    model_dir = train(vectors, rows, config, options, model=model)
    if first_process():  # rank 0 saved the model; its card goes beside it
        write_model_card(model_dir)
    if val is not None and first_process():  # validate once, not once per process

        evaluate(model_dir, val, input="images" if read_options.images else "text", split="val",
                 images=read_options.images, captions=read_options.captions, out=Path(options.out_dir) / "val",
                 progress=options.progress)
    return model_dir


def _report_skipped(examples, data: Path) -> None:
    """One line on stderr with what the readers (and the image check) left out, and why."""
    counts = {why: n for why, n in getattr(examples, "skipped", {}).items() if n}
    if counts and first_process():
        reasons = ", ".join(f"{n} {why}" for why, n in counts.items())
        print(f"skipped {sum(counts.values())} record(s) of {data}: {reasons}", file=sys.stderr, flush=True)


def _training_vectors(encoder: ClipEncoder, examples, input: str, where: str, hint: str, options: TrainOptions):
    """(vectors, rows, examples kept): CLIP text vectors, or image vectors for an image-trained reference."""
    if input == "images":
        images = list(examples.column("image"))
        first_view: dict[str, int] = {}  # each image is encoded once, through its first example
        for i, image in enumerate(images):
            if image:
                first_view.setdefault(image, i)
        kept, vectors = image_vectors(encoder, examples.select(first_view.values()), where, progress=options.progress)
        index = {image: i for i, image in enumerate(kept.column("image"))}
        examples = examples.select(i for i, image in enumerate(images) if image in index)
        examples.skipped = kept.skipped  # the reader's counts plus missing and unreadable images
        vector_of = array("i", (index[image] for image in examples.column("image")))
        return vectors, ExampleRows(examples, vector_of), examples
    examples = with_field(examples, "clip_text", where, hint)
    texts, rows = rows_from_examples(examples)
    return mapped_text_vectors(encoder, texts, progress=options.progress), rows, examples


def _with_memory(model: CloseModel, examples, vectors, rows, choices: ModelChoices, seed: int, clip_identity: str):
    """The model with its training texts' memory (saved with it), and the rows that retrieval
    augments. The config records where the vectors came from: the embedding cache of this CLIP and
    corpus (the saved copy is what the model reads)."""
    memory, groups = memory_from_examples(examples, vectors, choices.memory_size, seed)
    model.memory = memory
    model.config.memory.update(memory.identity(), embedding_cache={
        "clip_identity": clip_identity, "corpus_digest": text_digest(examples.values("clip_text"))})
    if choices.retrieve:
        rows = RetrievalRows(rows, vectors, memory, groups, model.adapter, choices.retrieve, seed)
    return model, rows

