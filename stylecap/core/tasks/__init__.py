"""Tasks: data + a reader + defaults (+ a metric). One module per task; ``TASKS`` is the registry.

A reader turns files in a public format into :class:`Example` records. Training reads
``clip_text`` (text-only CLOSE training); evaluation on images reads ``image``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import itertools
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from stylecap.core.images import IMAGE_SUFFIXES, is_folder
from stylecap.core.tasks.spill import SpilledValues
from stylecap.errors import InputError, UsageError


@dataclass
class Example:
    """One training row, or one view of an item to evaluate.

    Examples that share an ``id`` are views of one item (a caption paired with each of its image's
    other captions, a question paired with each of its image's captions): training uses them all,
    evaluation scores each item once.
    """

    target: str  # what the model should write
    clip_text: str | None = None  # the text CLIP encodes in text-only training
    image: str | None = None  # an image path, for evaluation on images
    input_text: str | None = None  # question / hypothesis / article, read after the prefix
    id: str = ""
    refs: list[str] = field(default_factory=list)  # every reference answer or caption, for metrics


class Examples(Sequence[Example]):
    """A reader's examples, with counts of the records it skipped and why (reported, never silent).

    Stored by column, each example a row of small integer codes into the column's values: training
    views repeat texts heavily (VQA pairs every question with each caption of its image, multiple
    mode pairs every caption with every other), so a dataset of millions of views holds a few bytes
    per view instead of millions of Python objects. The values themselves are spilled to
    memory-mapped files as they grow (:class:`SpilledValues`). ``clip_text`` holds each distinct
    text once (they are what gets encoded), found by a fixed-size digest rather than by the string;
    the other columns store a value once per run of equal ones (a caption's image, id and
    references repeat over its views). Indexing builds an :class:`Example` on demand.
    """

    FIELDS = ("target", "clip_text", "image", "input_text", "id", "refs")
    DISTINCT = ("clip_text",)

    def __init__(self, items: Iterable[Example] = (), skipped: Counter | None = None):
        self.skipped: Counter = skipped if skipped is not None else Counter()
        self._values: dict[str, SpilledValues] = {f: SpilledValues() for f in self.FIELDS}
        self._index: dict[str, dict] = {f: {} for f in self.DISTINCT}  # digest → code
        self._codes: dict[str, array] = {f: array("i") for f in self.FIELDS}
        self.extend(items)

    def append(self, example: Example) -> None:
        for name in self.FIELDS:
            value = getattr(example, name)
            self._codes[name].append(self._code(name, tuple(value) if name == "refs" else value))

    def _code(self, name: str, value) -> int:
        values = self._values[name]
        if name in self._index:
            key = _digest(value)
            code = self._index[name].get(key)
            if code is None:
                code = self._index[name][key] = values.append(value)
            return code
        if len(values) and values.last == value:
            return len(values) - 1
        return values.append(value)

    def extend(self, examples: Iterable[Example]) -> None:
        for example in examples:
            self.append(example)

    def __len__(self) -> int:
        return len(self._codes["target"])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.select(range(*i.indices(len(self))))
        values = {name: self.field(name, i) for name in self.FIELDS}
        return Example(**{**values, "refs": list(values["refs"])})

    def __eq__(self, other) -> bool:  # the same examples in the same order, as a list would compare
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"Examples({len(self)} examples, skipped={dict(self.skipped)})"

    def select(self, positions: Iterable[int] | None) -> "Examples":
        """The examples at ``positions`` (None: all), in that order, copied code by code (no
        :class:`Example` is built); the values are shared with this one, which only ever appends to them."""
        out = Examples(skipped=Counter(self.skipped))
        out._values, out._index = self._values, self._index
        if positions is None:
            out._codes = {name: array("i", codes) for name, codes in self._codes.items()}
            return out
        positions = list(positions)
        out._codes = {name: array("i", (codes[i] for i in positions)) for name, codes in self._codes.items()}
        return out

    def values(self, name: str) -> Sequence:
        """The values of a field, in the order first seen (``codes`` index into this); each once for
        ``clip_text``."""
        return self._values[name]

    def codes(self, name: str) -> array:
        """Per example, the position of its ``name`` in :meth:`values`."""
        return self._codes[name]

    def field(self, name: str, i: int):
        """Example ``i``'s ``name`` alone (a training row needs two fields, not a whole Example)."""
        return self._values[name][self._codes[name][i]]

    def column(self, name: str) -> Iterator:
        """Per example, its ``name``."""
        values, last, value = self._values[name], -1, None
        for code in self._codes[name]:
            if code != last:  # a run of views shares its value: look it up once
                last, value = code, values[code]
            yield value


def _digest(value) -> bytes | None:
    """16 bytes standing for a text: a set of them costs the same whatever the texts' lengths."""
    return None if value is None else hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass
class ReadOptions:
    """Options a reader may use; each reader documents which ones it reads."""

    split: str | None = None
    images: Path | None = None
    mode: str = "single"  # captioning: single (caption → itself) or multiple (caption → the image's others)
    limit: int | None = None
    captions: Path | None = None  # VQA: the images' captions (Karpathy dataset_coco.json), CLIP's text


MODES = ("single", "multiple")


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    read: Callable[[Path, ReadOptions], list[Example]]
    noise: float  # the paper's default σ for 768-d CLIP
    max_target_len: int
    max_input_len: int = 64
    num_beams: int = 5
    metric: str = "caption"  # how predictions are scored: caption | vqa | ve (see stylecap.core.metrics)
    mode_noise: dict = field(default_factory=dict)  # σ for modes other than single, e.g. {"multiple": 0.04}
    clip_text_hint: str = "check the data file"  # what to do when no example has text for CLIP

    def noise_for(self, mode: str = "single") -> float:
        return self.mode_noise.get(mode, self.noise)


# One module per task, each defining ``TASK``: add a task by adding a module and its name here.
TASK_MODULES = ("caption", "style", "vqa", "entailment", "news")


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Task]:
    # Imported on first use: the task modules import this package's Example, Examples and helpers.
    tasks = [importlib.import_module(f"{__name__}.{name}").TASK for name in TASK_MODULES]
    return {task.name: task for task in tasks}


def get_task(name: str) -> Task:
    tasks = _registry()
    if name not in tasks:
        raise UsageError(f"unknown task '{name}'", "--task", f"choose one of: {', '.join(tasks)}")
    return tasks[name]


def task_names() -> list[str]:
    return list(_registry())


# ----------------------------------------------------------------------------- shared by the readers

def finish(examples: Iterable[Example], skipped: Counter, options: ReadOptions, path: Path, what: str) -> Examples:
    """The first ``limit`` examples of a reader's stream (read no further), or a clear error when a
    file yields none."""
    kept = Examples(itertools.islice(examples, options.limit) if options.limit else examples, skipped)
    if not kept:
        reasons = ", ".join(f"{n} {why}" for why, n in skipped.items()) or "no records"
        raise InputError(f"no usable {what} ({reasons})", str(path), "check the file and --split")
    return kept


def with_field(examples: Examples, field_name: str, where: str, fix: str) -> Examples:
    """The examples that have ``clip_text`` (or ``image``); the others are counted as skipped."""
    if isinstance(examples, Examples) and examples and all(examples.values(field_name)):
        return examples.select(None)  # every example has it: share the values rather than copy them
    kept = Examples((ex for ex in examples if getattr(ex, field_name)), Counter(getattr(examples, "skipped", ())))
    if len(kept) < len(examples):
        kept.skipped[f"examples without {field_name.replace('_', ' ')}"] += len(examples) - len(kept)
    if not kept:
        raise InputError(f"no example has {field_name.replace('_', ' ')}", where, fix)
    return kept


def split_file(folder: Path, pattern: str, what: str, split: str) -> Path:
    """The one file in ``folder`` matching ``pattern`` (a glob naming ``split``); else an input error
    (exit 3, as every task's reader gives for a folder it cannot use)."""
    found = sorted(Path(folder).glob(pattern))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InputError(f"{len(found)} {what} files for split '{split}' in the folder ({names})", str(folder),
                         "pass the file itself with --data, or choose --split")
    return found[0]


def image_root(options: ReadOptions, data: Path) -> Path:
    """``--images``, else an ``images/`` folder beside the data file, else the data file's folder."""
    if options.images:
        return Path(options.images)
    folder = data if is_folder(data) else data.parent
    for candidate in (folder / "images", folder.parent / "images"):
        if is_folder(candidate):
            return candidate
    return folder


_TRAILING_DIGITS = re.compile(r"(\d+)$")


@functools.lru_cache(maxsize=8)
def image_index(root: Path) -> dict[str, str]:
    """Image files under ``root`` by id: the file stem, and the number it ends with
    (``COCO_val2014_000000000042`` → ``42``), for datasets whose records name images by id only."""
    index: dict[str, str] = {}
    if not is_folder(root):
        return index
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            index.setdefault(path.stem, str(path))
            digits = _TRAILING_DIGITS.search(path.stem)
            if digits:
                index.setdefault(str(int(digits.group(1))), str(path))
    return index


def find_image(root: Path, image_id) -> str | None:
    return image_index(Path(root).resolve()).get(str(image_id))
