"""The model card: a ``README.md`` in every saved model folder, in the Hugging Face format.

YAML front matter (``library_name: stylecap``, ``base_model`` when the LM is a hub model, tags, the
pipeline tag of the task, a ``stylecap`` block with the CLIP, the task and the training data, and a
``model-index`` with the metrics of every evaluation run on the model), then a short description and a
usage section. A folder uploaded with ``huggingface-cli upload ORG/NAME FOLDER`` is a hub model that
``--model hf-hub:ORG/NAME`` loads.

Evaluations are kept in ``evaluations.json`` beside the card (one entry per data file, split and
input; a rerun replaces its entry) and the card is written again from it and ``stylecap.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

from stylecap import __version__
from stylecap.core.lms import is_builtin, is_local
from stylecap.core.model import read_model_meta
from stylecap.core.tasks import get_task

CARD = "README.md"
EVALUATIONS = "evaluations.json"
# The hub's pipeline tag per task: what the model takes and gives.
PIPELINE_TAGS = {"caption": "image-to-text", "style": "image-to-text", "news": "image-to-text",
                 "vqa": "visual-question-answering", "ve": "image-text-to-text"}
# What `stylecap caption` needs besides the image, per task (the same flags the command documents).
USAGE_INPUT = {"vqa": ' --question "what colour is the circle?"', "ve": ' --hypothesis "a red circle is left of a square"',
               "news": " --context article.txt"}


def trained_on(meta: dict) -> str:
    """What a saved model was trained on, in a phrase: the data's own description when the run
    recorded one (the shapes world, a hub dataset), else the data file's name and split."""
    extra = meta["config"].get("extra", {})
    dataset = extra.get("dataset") or {}
    if dataset.get("description"):
        return dataset["description"]
    read = extra.get("read") or {}
    name = Path(extra.get("data", "")).name or "unrecorded data"
    split = f", {read['split']} split" if read.get("split") else ""
    return f"{name}{split} ({'image vectors' if read.get('trained_on') == 'images' else 'text only'})"


def write_model_card(model_dir: Path) -> Path | None:
    """Write (or rewrite) the folder's ``README.md`` from its ``stylecap.json`` and evaluations.
    Returns the card, or None for a folder that must not be written (a hub cache snapshot)."""
    folder = Path(model_dir)
    if not _writable(folder):
        return None
    from huggingface_hub import ModelCard

    meta = read_model_meta(folder)
    evaluations = _evaluations(folder)
    card = ModelCard(f"---\n{_card_data(meta, evaluations).to_yaml()}\n---\n\n{_body(meta, evaluations)}")
    card.save(folder / CARD)
    return folder / CARD


def record_evaluation(model_dir: Path, report: dict) -> None:
    """Add an evaluation's scores (the ``metrics.json`` report of ``stylecap eval`` or ``--val``) to the
    card; an earlier evaluation of the same data, split and input is replaced."""
    folder = Path(model_dir)
    if not _writable(folder) or not (folder / "stylecap.json").is_file():
        return
    reranked = report.get("decoding", {}).get("rerank")
    entry = {"data": Path(report["data"]).name, "dataset": report.get("dataset"), "split": report.get("split"),
             "input": report["input"] + (f", best of {reranked} samples by CLIP" if reranked else ""),
             "items": report["items"], "scores": report["scores"]}
    key = (entry["data"], entry["split"], entry["input"])
    kept = [e for e in _evaluations(folder) if (e["data"], e["split"], e["input"]) != key]
    try:
        (folder / EVALUATIONS).write_text(json.dumps(kept + [entry], indent=2) + "\n")
    except OSError:  # a read-only model folder keeps its card as it was; the scores are in metrics.json
        return
    write_model_card(folder)


def _writable(folder: Path) -> bool:
    """Hub cache snapshots hold links into the cache's blobs: writing through them would change the
    cached download, so their cards are left as downloaded."""
    return folder.is_dir() and not (folder / CARD).is_symlink() and not (folder / "stylecap.json").is_symlink()


def _evaluations(folder: Path) -> list[dict]:
    try:
        entries = json.loads((folder / EVALUATIONS).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [e for e in entries if isinstance(e, dict) and {"data", "split", "input", "scores"} <= set(e)] \
        if isinstance(entries, list) else []


def _base_model(lm: str) -> str | None:
    """The LM's hub name; built-in tiny LMs and local folders have none (they travel in ``lm/``)."""
    return None if is_builtin(lm) or is_local(lm) else lm


def _public(spec: str) -> str:
    """A model spec fit for a public card: a local path becomes its last name (where it lay on the
    training machine means nothing elsewhere and is nobody else's business)."""
    head, _, tail = spec.partition(":")
    if Path(spec).is_absolute():
        return f"{Path(spec).name} (a local folder)"
    if tail and Path(tail).is_absolute():
        return f"{Path(head).name if Path(head).is_absolute() else head}:{Path(tail).name} (local weights)"
    return spec


def _card_data(meta: dict, evaluations: list[dict]):
    from huggingface_hub import EvalResult, ModelCardData

    config = meta["config"]
    task, extra = config["task"], config.get("extra", {})
    dataset = extra.get("dataset") or {}
    base = _base_model(config["lm"])
    results = [EvalResult(task_type=PIPELINE_TAGS.get(task, "image-to-text"), task_name=get_task(task).description,
                          dataset_type=e.get("dataset") or e["data"], dataset_name=e.get("dataset") or e["data"],
                          dataset_split=e["split"], metric_type=name.lower(), metric_name=f"{name} (on {e['input']})",
                          metric_value=round(float(value), 4))
               for e in evaluations for name, value in e["scores"].items() if value is not None]
    return ModelCardData(
        library_name="stylecap", base_model=base, pipeline_tag=PIPELINE_TAGS.get(task),
        base_model_relation=("adapter" if config.get("lora") else "finetune") if base else None,
        datasets=[dataset["hub_id"]] if dataset.get("hub_id") else None,
        tags=["stylecap", "close", "text-only-training", "clip", task], model_name=f"stylecap {task} model",
        eval_results=results or None,
        stylecap={"task": task, "clip": _public(config["clip"]), "clip_dim": config["clip_dim"], "lm": _public(config["lm"]),
                  "adapter": config["adapter"], "noise": round(float(config["noise"]), 4),
                  "trained_on": trained_on(meta), "examples": extra.get("examples"),
                  "version": meta.get("stylecap_version", __version__)})


def _body(meta: dict, evaluations: list[dict]) -> str:
    config = meta["config"]
    task = config["task"]
    description = get_task(task).description
    lines = [f"# stylecap {task} model", "",
             f"{'An' if description[0] in 'aeiou' else 'A'} {description} model trained with stylecap "
             "(CLOSE: a frozen CLIP's *text* vectors feed a language model in training; its *image* vectors take "
             "their place at test time).", "",
             f"- trained on: {trained_on(meta)}",
             f"- CLIP: `{_public(config['clip'])}` ({config['clip_dim']}-d vectors)",
             f"- language model: `{_public(config['lm'])}` ({'LoRA adapter' if config.get('lora') else 'all weights trained'})",
             f"- gap adapter: {config['adapter']}, noise σ {float(config['noise']):.4f}",
             f"- stylecap {meta.get('stylecap_version', __version__)}"]
    if evaluations:
        lines += ["", "## Evaluation", "", "| data | split | on | metric | score |", "|---|---|---|---|---|"]
        lines += [f"| {e.get('dataset') or e['data']} | {e['split'] or 'all'} | {e['input']} | {name} | {value:.4f} |"
                  for e in evaluations for name, value in e["scores"].items() if value is not None]
    lines += ["", "## Usage", "", "```", "pip install stylecap",
              f"stylecap caption photos/ --model hf-hub:ORG/NAME{USAGE_INPUT.get(task, '')}  # once uploaded",
              f"stylecap caption photos/ --model path/to/this/folder{USAGE_INPUT.get(task, '')}",
              "```", "", "Upload the folder as it is: `huggingface-cli upload ORG/NAME path/to/this/folder`.", ""]
    return "\n".join(lines)
