"""Visual news: Visual News records (``id``, ``caption``, ``article_path``, ``image_path``), a JSON list.

The article is the input text; the caption is the target and, in text-only training, CLIP's text in
place of the image. Paths in records are relative to the dataset root, taken as the data file's
folder or the folder above it (Visual News's ``data.json`` sits at its root; split files may sit
one level down); ``--images`` overrides the root for images.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

from stylecap.core.images import is_file, is_folder
from stylecap.core.tasks import Example, Examples, ReadOptions, Task, finish
from stylecap.core.tasks.textfiles import json_records
from stylecap.errors import InputError

ARTICLE_CHARS = 4000  # the model reads max_input_len tokens; no need to hold whole articles


def read(path: Path, options: ReadOptions) -> Examples:
    path = Path(path)
    if is_folder(path):
        path = _split_file(path, options.split)
    roots = [path.parent, path.parent.parent]
    image_roots = [Path(options.images)] if options.images else roots
    skipped = Counter()

    def examples() -> Iterator[Example]:
        for number, record in enumerate(json_records(path)):
            if not isinstance(record, dict) or not isinstance(record.get("caption"), str) or not record["caption"].strip():
                skipped["malformed records"] += 1
                continue
            article = _article(record.get("article_path"), roots)
            if article is None:
                skipped["records whose article is missing"] += 1
                continue
            caption = record["caption"].strip()
            image = _locate(record.get("image_path"), image_roots) or _named(record.get("image_path"), image_roots)
            yield Example(target=caption, clip_text=caption, image=str(image) if image else None, input_text=article,
                          id=str(record.get("id", number)), refs=[caption])

    return finish(examples(), skipped, options, path, "news records")


def _locate(relative, roots: list[Path]) -> Path | None:
    if not isinstance(relative, str) or not relative:
        return None
    return next((root / relative for root in roots if is_file(root / relative)), None)


def _named(relative, roots: list[Path]) -> Path | None:
    """Where a missing image should be (under the first root), so evaluation can name it."""
    return roots[0] / relative if isinstance(relative, str) and relative else None


def _article(relative, roots: list[Path]) -> str | None:
    file = _locate(relative, roots)
    if file is None:
        return None
    with open(file, encoding="utf-8", errors="replace") as handle:
        return " ".join(handle.read(ARTICLE_CHARS).split()) or None


def _split_file(folder: Path, split: str | None) -> Path:
    for name in ([f"{split}_data.json"] if split else []) + ["data.json"]:
        if is_file(folder / name):
            return folder / name
    raise InputError(f"no Visual News file ({split or 'train'}_data.json or data.json) in the folder", str(folder),
                     "pass the JSON file with --data")


TASK = Task(name="news", description="visual news captioning (article + image → caption)", read=read, noise=0.04,
            max_target_len=32, max_input_len=256, metric="caption")
