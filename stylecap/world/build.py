"""Build a shapes world on disk: scenes → images and every text format, deterministic by seed.

Each image draws its scene and its texts from its own random stream, seeded by (seed, image id),
so a world is the same whatever the number of worker processes, and the files are byte-identical
for the same seed and sizes.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import nullcontext
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from stylecap.errors import InputError, UsageError
from stylecap.world import formats, language
from stylecap.world.render import render
from stylecap.world.scenes import sample_scene, save_scenes, stream, vocab

VERSION = 4  # 2: entailment and contradiction are two versions of one claim; 3: character-based and reviews voices;
# 4: every voice states itself before the scene (a caption cut at its length limit keeps its voice)
# Disjoint image sets, in id order: CLIP pretraining, text-only training, gap-adapter pairs, eval.
SPLITS = ("clip", "train", "pairs", "val", "test")
TASK_SPLITS = ("train", "val", "test")  # the splits with VQA, entailment and news files (styles: train)
SIZES = {
    "small": {"clip": 400, "train": 300, "pairs": 100, "val": 50, "test": 100},
    "default": {"clip": 16000, "train": 8000, "pairs": 2000, "val": 500, "test": 1000},
    "large": {"clip": 100000, "train": 40000, "pairs": 5000, "val": 1000, "test": 2000},
}
_OUTPUTS = ("images", "vqa", "snli", "snli_ve", "news", "styles", "dataset_coco.json", "scenes.jsonl",
            "world.json")
_CHUNK = 256


def split_sizes(size: str = "default", overrides: dict[str, int] | None = None) -> dict[str, int]:
    """Images per split for a preset, with per-split overrides."""
    if size not in SIZES:
        raise UsageError(f"unknown world size {size!r}", "--size", f"choose one of: {', '.join(SIZES)}")
    sizes = {**SIZES[size], **(overrides or {})}
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise UsageError(f"unknown split {sorted(unknown)[0]!r}", "--split", f"splits are: {', '.join(SPLITS)}")
    if any(n < 0 for n in sizes.values()):
        raise UsageError("split sizes must be zero or more", "--split")
    return sizes


def build_world(out: str | Path, seed: int = 0, size: str = "default", image_size: int = 64,
                splits: dict[str, int] | None = None, workers: int | None = None,
                force: bool = False, progress: bool = False) -> dict:
    """Write a world into ``out`` and return its description (also written as ``world.json``)."""
    out = Path(out)
    sizes = split_sizes(size, splits)
    if image_size < 16:
        raise UsageError("images must be at least 16 pixels wide", "--image-size")
    if seed < 0:
        raise UsageError("the seed must be zero or more", "--seed")
    _prepare(out, force)
    for folder in [f"images/{split}" for split in SPLITS] + ["news/articles"]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    jobs, first_id = [], 1  # image ids run on across splits, so every image has its own id
    for split in SPLITS:
        jobs += [(image_id, split, seed, str(out), image_size)
                 for image_id in range(first_id, first_id + sizes[split])]
        first_id += sizes[split]
    items = _make_all(jobs, workers or os.cpu_count() or 1, progress)
    _write_texts(items, out)
    save_scenes([item.scene for item in items], out / "scenes.jsonl")
    info = {"format": "stylecap-world", "version": VERSION, "seed": seed, "image_size": image_size,
            "splits": sizes, "task_splits": list(TASK_SPLITS), "voices": list(vocab()["voices"]),
            "vocabulary": {k: list(vocab()[k]) for k in ("shapes", "colours", "sizes", "backgrounds",
                                                          "relations")}}
    (out / "world.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _prepare(out: Path, force: bool) -> None:
    """Make ``out`` ready. An unfinished build (no world.json yet, nothing else there) is simply
    redone, so an interrupted build resumes by running it again; anything more needs --force."""
    if out.exists() and not out.is_dir():
        raise InputError("output path is a file", str(out), "choose a folder for --out")
    names = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if ("world.json" in names or names - set(_OUTPUTS)) and not force:
        # an output already in use is a bad --out, as for `caption --out` and `train --out` (exit 2)
        raise UsageError("output folder is not empty", str(out), "pass --force to rebuild the world there")
    for name in names & set(_OUTPUTS):  # only what a build writes: leave anything else the user keeps
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _make_all(jobs: list[tuple], workers: int, progress: bool) -> list[formats.Item]:
    from rich.console import Console
    from rich.progress import Progress

    items = []
    parallel = workers > 1 and len(jobs) > 1
    chunk = max(1, min(_CHUNK, len(jobs) // (4 * workers)))  # small worlds still spread over workers
    # fork where the system has it: workers start at once, without re-importing
    context = get_context("fork" if "fork" in get_all_start_methods() else None)
    with Progress(console=Console(stderr=True), transient=True, disable=not progress) as bar, \
            (context.Pool(workers) if parallel else nullcontext()) as pool:
        task = bar.add_task("building world", total=len(jobs))
        for item in pool.imap(_make, jobs, chunksize=chunk) if parallel else map(_make, jobs):
            items.append(item)
            bar.advance(task)
    return items


def _make(job: tuple) -> formats.Item:
    """Make one image: its scene, its PNG and article files, and every text about it. Runs in a
    worker, so it does all the per-image work; the parent only gathers and writes the indexes."""
    image_id, split, seed, out, image_size = job
    scene = sample_scene(stream(seed, image_id, "scene"), image_id, split)
    # compress_level 1: nearly as small as the default level here, and quicker to write
    render(scene, image_size).save(Path(out) / formats.image_path(scene), compress_level=1)
    texts = _texts(scene, seed)
    if "news" in texts:
        (Path(out) / formats.article_path(scene)).write_text(texts["news"][0] + "\n")
    return formats.Item(scene, texts)


def _texts(scene, seed: int) -> dict:
    rng = stream(seed, scene.image_id, "language")
    caps = language.captions(scene, rng)
    texts = {"captions": [c.text for c in caps]}
    if scene.split in TASK_SPLITS:
        texts["questions"] = language.questions(scene, rng)
        texts["hypotheses"] = language.hypotheses(scene, caps[0], rng)  # the SNLI premise is caption 0
        texts["news"] = language.news(scene, rng)
    if scene.split == "train":
        texts["voices"] = {v: language.voice_caption(scene, v, rng).text for v in vocab()["voices"]}
    return texts


def _write_texts(items: list[formats.Item], out: Path) -> None:
    formats.write_karpathy(items, out)
    task_items = [item for item in items if item.scene.split in TASK_SPLITS]
    formats.write_styles(task_items, out, list(vocab()["voices"]))
    for split in TASK_SPLITS:
        chosen = [item for item in task_items if item.scene.split == split]
        formats.write_vqa(chosen, split, out, vocab()["vqa"])
        formats.write_entailment(chosen, split, out)
        formats.write_news(chosen, split, out)
