"""Visual entailment (task ``ve``): SNLI JSONL for text-only training, SNLI-VE JSONL for evaluation.

SNLI (``snli_1.0_<split>.jsonl``): ``sentence1`` is the premise, CLIP's text in place of the image;
``sentence2`` the hypothesis, read after the prefix; ``gold_label`` the target. SNLI-VE
(``snli_ve_<split>.jsonl``) names the premise image by ``Flickr30K_ID``; SNLI's ``captionID``
(``<flickr id>.jpg#k``) names the same image, so either file can be evaluated on images.
Lines without a gold label (SNLI's "-", no annotator consensus) are skipped and counted.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

from stylecap.core.images import is_folder
from stylecap.core.tasks import Example, Examples, ReadOptions, Task, find_image, finish, image_root, split_file
from stylecap.core.tasks.textfiles import jsonl_records

LABELS = ("entailment", "neutral", "contradiction")
_SNLI_SPLITS = {"val": "dev"}  # SNLI-family files call validation "dev"


def read(path: Path, options: ReadOptions) -> Examples:
    path = Path(path)
    if is_folder(path):
        split = options.split or "train"
        path = split_file(path, f"*_{_SNLI_SPLITS.get(split, split)}.jsonl", "SNLI / SNLI-VE", split)
    root, skipped = image_root(options, path), Counter()

    def examples() -> Iterator[Example]:
        for number, record in jsonl_records(path, skipped):
            label, hypothesis = record.get("gold_label"), record.get("sentence2")
            if not isinstance(hypothesis, str) or not hypothesis.strip():
                skipped["malformed lines"] += 1
                continue
            if label not in LABELS:
                skipped["pairs without a gold label"] += 1
                continue
            premise = record.get("sentence1")
            yield Example(
                target=label, clip_text=premise.strip() if isinstance(premise, str) and premise.strip() else None,
                image=_image(root, _image_id(record)), input_text=hypothesis.strip(),
                id=str(record.get("pairID") or f"{path.stem}:{number}"), refs=[label])

    return finish(examples(), skipped, options, path, "premise/hypothesis pairs")


def _image(root: Path, image_id: str) -> str:
    """The image's file, found by id under the root; else Flickr30k's name for it (``<id>.jpg``), so
    that evaluation names the image that is missing and counts it once, not once per pair."""
    return find_image(root, image_id) or str(root / f"{image_id}.jpg")


def _image_id(record: dict) -> str:
    if record.get("Flickr30K_ID") is not None:
        return str(record["Flickr30K_ID"])
    return Path(str(record.get("captionID", "")).split("#")[0]).stem


TASK = Task(name="ve", description="visual entailment (SNLI → SNLI-VE)", read=read, noise=0.08, max_target_len=8,
            metric="ve", clip_text_hint="SNLI-VE lines carry no premise text: evaluate them on images")
