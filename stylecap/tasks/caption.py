"""Captioning: a caption file (plain text / JSONL) for text-only training.

The Karpathy-split COCO/Flickr30k readers and the ``multiple`` mode build on this module.
"""
from __future__ import annotations

from pathlib import Path

from stylecap.errors import InputError
from stylecap.tasks import Example, ReadOptions, Task
from stylecap.tasks.textfiles import iter_sentences


def read(path: Path, options: ReadOptions) -> list[Example]:
    """Single mode on a sentence file: each caption is both the CLIP input and the target."""
    examples = [Example(target=text, clip_text=text, id=key, refs=[text]) for key, text in iter_sentences(path)]
    if not examples:
        raise InputError("no captions found", str(path), "the file needs one caption per line (or JSONL records)")
    return examples[: options.limit] if options.limit else examples


TASK = Task(name="caption", description="image captioning", read=read, noise=0.12, max_target_len=32)
