"""Which model a command uses when ``--model`` is not given.

In order: ``STYLECAP_MODEL``; the model trained or demoed most recently on this machine for a task
that reads what was given (``stylecap train`` and ``stylecap demo`` record theirs in the cache's
``models.json``); else, for plain captioning, the captioner shipped with stylecap (trained text-only
on the shapes world: it names shapes, not what is in a photo). Whichever it is, one line names it and
what it was trained on.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from stylecap.core.hub import is_hub_ref
from stylecap.core.model import CONFIG_FILE, read_model_meta
from stylecap.errors import ModelError
from stylecap.paths import asset, cache_root
from stylecap.workflows.model_card import trained_on

REGISTRY = "models.json"  # in the cache: the latest model per task, and how it was made
SHIPPED = "captioner"  # stylecap/assets/captioner: a saved model folder
ENV = "STYLECAP_MODEL"
# What each kind of input asks of a model: the flag given → the tasks that read it.
TASKS_FOR_INPUT = {"question": ("vqa",), "hypothesis": ("ve",), "context": ("news",), None: ("caption", "style")}


@dataclass
class ModelChoice:
    model: Path | str  # a folder or an hf-hub: name
    line: str | None  # what to tell the user (None: they named the model themselves)


def remember_model(model_dir: Path, made_by: str) -> None:
    """Record ``model_dir`` as the latest model of its task (``made_by``: the command that made it)."""
    folder = Path(model_dir).resolve()
    task = read_model_meta(folder)["config"]["task"]
    entries = remembered_models()
    entries[task] = {"path": str(folder), "made_by": made_by, "time": time.strftime("%Y-%m-%d %H:%M"),
                     "at": time.time()}
    path = cache_root() / REGISTRY
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(entries, indent=2) + "\n")
        tmp.replace(path)  # atomic: two commands finishing at once leave one whole file
    except OSError:  # a read-only cache only loses the convenience, never the finished model
        tmp.unlink(missing_ok=True)


def remembered_models() -> dict[str, dict]:
    """Task → {path, made_by, time} of the latest model per task (an unreadable record is forgotten)."""
    try:
        entries = json.loads((cache_root() / REGISTRY).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {task: e for task, e in entries.items() if isinstance(e, dict) and isinstance(e.get("path"), str)} \
        if isinstance(entries, dict) else {}


def shipped_captioner() -> Path | None:
    folder = asset(SHIPPED)
    return folder if (folder / CONFIG_FILE).is_file() else None


def choose_model(given: Path | str | None, input_kind: str | None = None) -> ModelChoice:
    """The model to use: the one given, else ``STYLECAP_MODEL``, else the latest remembered one for a
    task that reads ``input_kind`` (None: plain captioning; "question", "hypothesis", "context"), else
    the shipped captioner. No model at all is a one-line error saying how to get one."""
    env = os.environ.get(ENV)
    if given is not None and (not env or str(given) not in (env, str(Path(env)))):
        return ModelChoice(given, None)
    if env:
        return ModelChoice(env, f"model from {ENV}: {env}{_about(env)}")
    latest = _latest(TASKS_FOR_INPUT[input_kind])
    if latest is not None:
        path, entry = latest
        return ModelChoice(path, f"no --model: using the {read_model_meta(path)['config']['task']} model made last "
                                 f"on this machine by `{entry['made_by']}` ({entry['time']}): {path}{_about(path)}")
    shipped = shipped_captioner() if input_kind is None else None
    if shipped is not None:
        return ModelChoice(shipped, "no --model: using the captioner shipped with stylecap, a shapes-world "
                                    f"captioner, not a photo captioner{_about(shipped)}; train your own with "
                                    "`stylecap train` or pass --model")
    wanted = "/".join(TASKS_FOR_INPUT[input_kind])
    raise ModelError(f"no model given and no {wanted} model trained on this machine yet", "--model",
                     f"train one (`stylecap train --task {TASKS_FOR_INPUT[input_kind][0]}`), pass --model DIR "
                     f"or hf-hub:ORG/NAME, or set {ENV}")


def _latest(tasks: tuple[str, ...]) -> tuple[Path, dict] | None:
    """The newest remembered model of one of ``tasks`` whose folder is still there."""
    entries = remembered_models()
    found = [(entries[t].get("at", 0.0), Path(entries[t]["path"]), entries[t]) for t in tasks if t in entries
             and (Path(entries[t]["path"]) / CONFIG_FILE).is_file()]
    if not found:
        return None
    _, path, entry = max(found, key=lambda item: item[0])
    return path, entry


def _about(model: Path | str) -> str:
    """`` (trained on …)`` for a local model folder; nothing for a hub name (not fetched just to say so)."""
    if is_hub_ref(model):
        return ""
    try:
        return f" (trained on {trained_on(read_model_meta(model))})"
    except ModelError:
        return ""  # the command itself reports what is wrong with the folder
