"""Evaluate a trained model on a task's data: on images (the paper's protocol) or on the CLIP text
the model was trained from. Running both on one model shows the text→image transfer gap directly.

Writes ``predictions.jsonl`` (one record per item) and ``metrics.json`` (scores, counts of what was
skipped and why, each image that could not be used with its reason, notes) into the output folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from stylecap.core.encoders import default_device, load_clip
from stylecap.core.hub import is_hub_ref
from stylecap.core.images import path_text
from stylecap.core.metrics import score
from stylecap.core.model import load_model
from stylecap.core.rerank import check_rerank, generate_reranked
from stylecap.core.tasks import Example, Examples, ReadOptions, get_task, with_field
from stylecap.core.vectors import encode_texts_cached, readable_image_vectors
from stylecap.errors import UsageError, printable
from stylecap.options import Decoding
from stylecap.progress import simple_progress
from stylecap.workflows.model_card import record_evaluation

INPUTS = ("images", "text")


@dataclass
class EvalReport:
    report: dict  # the contents of metrics.json
    predictions: Path
    metrics: Path

    @property
    def incomplete(self) -> bool:
        """Some images were missing or unreadable (each counted in the report)."""
        skipped = self.report["skipped"]
        return bool(skipped.get("missing images") or skipped.get("unreadable images"))

    @property
    def failures(self) -> list[dict]:
        """The images that could not be used, ``{"image", "reason"}`` each (``{"item", "reason"}`` where
        the data names no file for an item)."""
        return self.report["failures"]


def evaluate(model_dir: Path, data: Path, input: str = "images", split: str | None = "test",
             images: Path | None = None, captions: Path | None = None, out: Path | None = None,
             limit: int | None = None, batch_size: int = 32, num_beams: int | None = None,
             meteor: bool = True, progress: bool = True, rerank: int = 0) -> EvalReport:
    """Predict every item of ``data`` from its image (or its CLIP text) and score the predictions."""
    if input not in INPUTS:
        raise UsageError(f"unknown input '{input}'", "--input", f"choose one of: {', '.join(INPUTS)}")
    Decoding(num_beams=num_beams, rerank=rerank)  # checked before the model loads
    if rerank and input != "images":
        raise UsageError("--rerank judges captions against the image, and --input text gives no image", "--rerank",
                         "leave --rerank out, or evaluate on --input images")
    model = load_model(model_dir, device=default_device())
    task = get_task(model.config.task)
    check_rerank(rerank, task.name)
    examples = one_per_item(task.read(Path(data), ReadOptions(split=split, images=images, captions=captions)))
    examples = Examples(examples[:limit] if limit else examples, examples.skipped)
    encoder = load_clip(model.config.clip)
    failures = []
    if input == "text":
        examples = with_field(examples, "clip_text", str(data), task.clip_text_hint)

        vectors = encode_texts_cached(encoder, [ex.clip_text for ex in examples], progress=progress)
    else:
        examples, vectors, failures = readable_image_vectors(encoder, examples, str(images or data), progress=progress)
    outputs = predict(model, vectors, examples, batch_size, num_beams, progress, rerank, encoder)
    references = {ex.id: reference_texts(ex, input, task.metric) for ex in examples}
    predictions = {ex.id: text for ex, (text, _) in zip(examples, outputs, strict=True)}
    kwargs = {"meteor": meteor} if task.metric == "caption" else {}
    scores, notes = score(task.metric, predictions, references, **kwargs)
    report = {"task": task.name, "metric": task.metric, "input": input, "model": str(Path(model_dir).resolve()),
              "data": str(Path(data).resolve()), "split": split, "items": len(examples), "scores": scores,
              "skipped": dict(examples.skipped), "failures": [_named(f) for f in failures], "notes": notes,
              "decoding": {"rerank": rerank} if rerank else {"num_beams": num_beams or model.config.generation.get("num_beams", 1)}}
    out = Path(out) if out else default_out(model_dir, split, input + (f"-rerank{rerank}" if rerank else ""))
    result = _write(report, examples, outputs, references, out)
    record_evaluation(model_dir, report)  # the scores join the model's card
    return result


def _named(failure: dict) -> dict:
    """A failure as JSON can hold it: a file name that is not UTF-8 with its odd bytes as ``\\xNN``."""
    return {**failure, "image": path_text(failure["image"])} if failure.get("image") else failure


def one_per_item(examples: Examples) -> Examples:
    """The first example of each id: training views of one item (its captions, its answers) score once."""
    seen: set[str] = set()
    kept = [ex for ex in examples if not (ex.id in seen or seen.add(ex.id))]
    return Examples(kept, examples.skipped)


def reference_texts(example: Example, input: str, metric: str) -> list[str]:
    """The references to score against. Read from a caption, a captioner must not be credited for
    copying it, so the caption the text input reads leaves the references (when others remain) —
    on images too, so that ``--input text`` and ``--input images`` score the same prediction
    against the same references and their difference is the transfer gap alone."""
    if metric == "caption" and example.clip_text:
        return [ref for ref in example.refs if ref != example.clip_text] or example.refs
    return example.refs


def predict(model, vectors: torch.Tensor, examples: Sequence[Example], batch_size: int = 32,
            num_beams: int | None = None, progress: bool = True, rerank: int = 0,
            encoder=None) -> list[tuple[str, float]]:
    """The model's best (text, score) for each example's vector and input text; with ``rerank`` N,
    the best of N samples by ``encoder``, the CLIP that made the vectors (``stylecap.core.rerank``)."""
    outputs = []
    with simple_progress("decoding", len(examples), enabled=progress) as bar:
        task = bar.add_task("decoding", total=len(examples))
        for start in range(0, len(examples), batch_size):
            batch, batch_vectors = examples[start:start + batch_size], vectors[start:start + batch_size]
            texts = [ex.input_text for ex in batch]
            texts = texts if any(texts) else None
            if rerank:
                decoded = generate_reranked(model, encoder, batch_vectors, texts,
                                            **Decoding(rerank=rerank).generate_kwargs())
            else:
                decoded = model.generate(batch_vectors, texts, num_beams=num_beams)
            outputs += [candidates[0] for candidates in decoded]
            bar.update(task, advance=len(batch))
    return outputs


def default_out(model_dir: Path, split: str | None, input: str) -> Path:
    """``<run>/eval/<split>-<input>`` beside the model folder (``eval/NAME/…`` here for a hub model,
    whose folder is the hub's cache)."""
    if is_hub_ref(model_dir):
        return Path("eval") / str(model_dir).rpartition("/")[2] / f"{split or 'all'}-{input}"
    return Path(model_dir).resolve().parent / "eval" / f"{split or 'all'}-{input}"


def _write(report: dict, examples: Sequence[Example], outputs, references: dict, out: Path) -> EvalReport:
    out.mkdir(parents=True, exist_ok=True)
    predictions, metrics = out / "predictions.jsonl", out / "metrics.json"
    source = "image" if report["input"] == "images" else "clip_text"
    with open(predictions, "w", encoding="utf-8") as handle:
        for ex, (text, confidence) in zip(examples, outputs, strict=True):
            given = getattr(ex, source)
            record = {"id": ex.id, "prediction": text, "score": round(confidence, 5),
                      source: path_text(given) if source == "image" else given,
                      "input_text": ex.input_text, "references": references[ex.id]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    metrics.write_text(json.dumps(report, indent=2) + "\n")
    return EvalReport(report, predictions, metrics)


def metrics_table(report: dict):
    """The scores as a Rich table (×100, as papers print them), with what was skipped and notes below."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # Text, not markup: the split and the notes are the user's words and files' contents ("[bold]").
    table = Table(title=Text(printable(f"{report['task']} · {report['split'] or 'all'} · on {report['input']} · "
                                       f"{report['items']} items")))
    table.add_column("metric")
    table.add_column("score ×100", justify="right")
    for name, value in report["scores"].items():
        table.add_row(Text(printable(name)), f"{100 * value:.2f}")
    below = [f"skipped: {n} {why}" for why, n in report["skipped"].items()] + [f"note: {n}" for n in report["notes"]]
    return Group(table, *(Text(printable(line), style="dim") for line in below))
