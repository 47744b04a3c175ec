"""Stylistic captioning: train on a style corpus (a `stylecap generate` folder, or any sentence file)."""
from __future__ import annotations

import itertools
from pathlib import Path

from stylecap.core.images import is_folder
from stylecap.core.tasks import Example, Examples, ReadOptions, Task
from stylecap.core.tasks.textfiles import iter_sentences
from stylecap.errors import InputError


def corpus_files(path: Path) -> list[Path]:
    """A corpus folder's JSONL shards (sorted), or the file itself."""
    path = Path(path)
    if is_folder(path):
        files = sorted(p for p in path.rglob("*.jsonl") if "manifest" not in p.name)
        if not files:
            raise InputError("no .jsonl shards in the corpus folder", str(path),
                             "build one with `stylecap generate --style NAME --out DIR`")
        return files
    return [path]


def read(path: Path, options: ReadOptions) -> Examples:
    examples = (Example(target=text, clip_text=text, id=key, refs=[text])
                for file in corpus_files(path) for key, text in iter_sentences(file))
    kept = Examples(itertools.islice(examples, options.limit) if options.limit else examples)
    if not kept:
        raise InputError("the style corpus is empty", str(path), "generate some sentences first")
    return kept


TASK = Task(name="style", description="stylistic captioning from a text corpus", read=read, noise=0.12,
            max_target_len=40)
