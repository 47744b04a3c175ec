"""Captioning: the Karpathy-split COCO / Flickr30k file (``dataset_coco.json``,
``dataset_flickr30k.json``), COCO's own per-split captions file (``captions_val2014.json``: images
with ``id`` and ``file_name``, annotations with ``image_id`` and ``caption``; the file is one split
and its images are found by file name under ``--images``), or a plain caption file (text / JSONL)
for text-only training.

Two training modes, as in the paper: *single* (each caption is both CLIP's input and the target)
and *multiple* (a caption's vector is the input; each of the image's other captions is a target).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

from stylecap.core.images import is_folder
from stylecap.core.tasks import MODES, Example, Examples, ReadOptions, Task, finish, image_root
from stylecap.core.tasks.textfiles import iter_sentences, json_records, other_task_error
from stylecap.errors import InputError, UsageError

KARPATHY_SPLITS = {"train": {"train", "restval"}}  # Karpathy's "restval" images are training images


def read(path: Path, options: ReadOptions) -> Examples:
    if options.mode not in MODES:
        raise UsageError(f"unknown captioning mode '{options.mode}'", "--mode", f"choose one of: {', '.join(MODES)}")
    path = captions_file(Path(path), options.split) if is_folder(path) else Path(path)
    if path.suffix == ".json":
        return read_karpathy(path, options)
    if options.mode != "single":
        raise UsageError("--mode multiple needs captions grouped by image", str(path),
                         "use a Karpathy-split file (dataset_coco.json), or --mode single")
    examples = (Example(target=text, clip_text=text, id=key, refs=[text]) for key, text in iter_sentences(path))
    return finish(examples, Counter(), options, path, "captions (one caption per line, or JSONL records)")


def read_karpathy(path: Path, options: ReadOptions) -> Examples:
    root, skipped = image_root(options, path), Counter()

    def examples() -> Iterator[Example]:
        for image_id, relative, captions in caption_images(path, options.split, skipped):
            if options.mode == "multiple" and len(captions) < 2:
                skipped["images with one caption (multiple mode needs two)"] += 1
                continue
            yield from caption_examples(captions, image_id, str(root / relative), options.mode)

    return finish(examples(), skipped, options, path, f"captioned images in split '{options.split}'"
                  if options.split else "captioned images")


def caption_examples(captions: list[str], image_id: str, image: str, mode: str) -> list[Example]:
    def example(source: str, target: str) -> Example:
        return Example(target=target, clip_text=source, image=image, id=image_id, refs=captions)

    if mode == "single":
        return [example(text, text) for text in captions]
    return [example(source, target) for i, source in enumerate(captions)
            for j, target in enumerate(captions) if i != j]


def caption_images(path: Path, split: str | None, skipped: Counter) -> Iterator[tuple[str, str, list[str]]]:
    """(image id, image path relative to the image root, captions) for each image, from a Karpathy
    file (images of ``split``) or from COCO's own captions file (a split in itself)."""
    if is_official(path):
        return official_images(path, skipped)
    return karpathy_images(path, split, skipped)


def is_official(path: Path) -> bool:
    return Path(path).name.startswith("captions_")


def official_images(path: Path, skipped: Counter) -> Iterator[tuple[str, str, list[str]]]:
    """Images of COCO's ``captions_<split>.json`` with their captions; the id is COCO's image id."""
    files: dict[str, str] = {}
    for record in json_records(path, "images"):
        if not isinstance(record, dict) or record.get("id") is None or not record.get("file_name"):
            skipped["malformed image records"] += 1
            continue
        files[str(record["id"])] = record["file_name"]
    captions: dict[str, list[str]] = defaultdict(list)
    for note in json_records(path, "annotations"):
        text = note.get("caption") if isinstance(note, dict) else None
        if not isinstance(text, str) or not text.strip() or str(note.get("image_id")) not in files:
            skipped["malformed caption records"] += 1
            continue
        captions[str(note["image_id"])].append(text.strip())
    for image_id, name in files.items():
        if not captions.get(image_id):
            skipped["images without captions"] += 1
            continue
        yield image_id, name, captions[image_id]


def karpathy_images(path: Path, split: str | None, skipped: Counter) -> Iterator[tuple[str, str, list[str]]]:
    """(image id, image path relative to the image root, captions) for each image in ``split``.

    The id is COCO's ``cocoid`` (what VQA's ``image_id`` refers to) or, for Flickr30k, the file stem.
    """
    wanted = KARPATHY_SPLITS.get(split, {split}) if split else None
    for number, record in enumerate(json_records(path, "images"), 1):
        if not isinstance(record, dict) or not record.get("filename"):
            if other := other_task_error(record, f"{path} record {number}"):
                raise other  # not a Karpathy file with a bad record, but another task's file
            skipped["malformed image records"] += 1
            continue
        if wanted and record.get("split") not in wanted:
            continue
        captions = [s["raw"].strip() for s in record.get("sentences") or []
                    if isinstance(s, dict) and isinstance(s.get("raw"), str) and s["raw"].strip()]
        if not captions:
            skipped["images without captions"] += 1
            continue
        image_id = str(record["cocoid"]) if record.get("cocoid") is not None else Path(record["filename"]).stem
        yield image_id, str(Path(record.get("filepath") or "") / record["filename"]), captions


def captions_file(folder: Path, split: str | None) -> Path:
    """A folder's Karpathy file, else COCO's captions file of ``split`` (``captions_<split>*.json``)."""
    found = sorted(folder.glob("dataset_*.json")) or sorted(folder.glob(f"captions_{split or 'train'}*.json"))
    if not found:
        raise InputError("no Karpathy-split file (dataset_coco.json / dataset_flickr30k.json) or COCO captions "
                         f"file (captions_{split or 'train'}*.json) in the folder", str(folder),
                         "pass the file itself with --data")
    return found[0]


TASK = Task(name="caption", description="image captioning", read=read, noise=0.12, max_target_len=32,
            metric="caption", mode_noise={"multiple": 0.04})
