"""Tasks: data + a reader + defaults (+ a metric). One module per task; ``TASKS`` is the registry.

A reader turns files in a public format into :class:`Example` records. Training reads
``clip_text`` (text-only CLOSE training); evaluation on images reads ``image``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stylecap.errors import UsageError


@dataclass
class Example:
    target: str  # what the model should write
    clip_text: str | None = None  # the text CLIP encodes in text-only training
    image: str | None = None  # an image path, for evaluation on images
    input_text: str | None = None  # question / hypothesis / article, read after the prefix
    id: str = ""
    refs: list[str] = field(default_factory=list)  # every reference answer or caption, for metrics


@dataclass
class ReadOptions:
    """Options a reader may use; each reader documents which ones it reads."""

    split: str | None = None
    images: Path | None = None
    mode: str = "single"  # captioning: single (caption → itself) or multiple (caption → the image's others)
    limit: int | None = None


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    read: Callable[[Path, ReadOptions], list[Example]]
    noise: float  # the paper's default σ for 768-d CLIP
    max_target_len: int
    max_input_len: int = 64
    num_beams: int = 5


def _registry() -> dict[str, Task]:
    from stylecap.tasks import caption, style

    tasks = [caption.TASK, style.TASK]
    for optional in ("vqa", "entailment", "news"):  # standard-dataset tasks, each in its own module
        try:
            module = __import__(f"stylecap.tasks.{optional}", fromlist=["TASK"])
        except ModuleNotFoundError as exc:
            if exc.name != f"stylecap.tasks.{optional}":
                raise
            continue
        tasks.append(module.TASK)
    return {task.name: task for task in tasks}


def get_task(name: str) -> Task:
    tasks = _registry()
    if name not in tasks:
        raise UsageError(f"unknown task '{name}'", "--task", f"choose one of: {', '.join(tasks)}")
    return tasks[name]


def task_names() -> list[str]:
    return list(_registry())
