"""VQA v2: question and annotation JSON files (``v2_OpenEnded_mscoco_<split>_questions.json`` with
``v2_mscoco_<split>_annotations.json`` beside it).

Text-only training reads the image's COCO captions as CLIP's text, as the paper does: each question
is paired with each caption of its image (``--captions``, a Karpathy-split ``dataset_coco.json``;
found beside the VQA files when not given). Targets follow the paper's rule: the most common answer,
plus every answer with at least 3 votes or as many votes as the most common. ``refs`` keeps all ten
human answers for the official accuracy.
"""
from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator

from stylecap.core.answers import normalize_answer
from stylecap.core.images import is_file, is_folder
from stylecap.core.tasks import Example, Examples, ReadOptions, Task, find_image, finish, image_root, split_file
from stylecap.core.tasks.caption import caption_images
from stylecap.core.tasks.textfiles import json_records, require_file
from stylecap.errors import InputError

MIN_VOTES = 3


def read(path: Path, options: ReadOptions) -> Examples:
    questions_file, annotations_file = vqa_files(Path(path), options.split)
    skipped = Counter()
    # interned: the ten answers of a question repeat across questions ("yes", "2"), so each is held once
    answers = {str(ann.get("question_id")): [sys.intern(a["answer"]) for a in ann.get("answers") or [] if "answer" in a]
               for ann in json_records(annotations_file, "annotations") if isinstance(ann, dict)}
    captions, caption_root = image_captions(options, questions_file)
    root = image_root(options, questions_file)

    @functools.lru_cache(maxsize=None)  # once per image, not once per question about it
    def locate(image_id: str) -> str | None:
        """The captions file's path for the image, else a search by id (COCO's file names end in it)."""
        relative = captions.get(image_id, (None, None))[0]
        if relative and is_file(caption_root / relative):
            return str(caption_root / relative)
        # else the file by id; else the captions file's name for it, so evaluation can name it as missing
        return find_image(root, image_id) or (str(caption_root / relative) if relative else None)

    def examples() -> Iterator[Example]:
        for question in json_records(questions_file, "questions"):
            if not isinstance(question, dict) or not question.get("question") or question.get("image_id") is None:
                skipped["malformed questions"] += 1
                continue
            refs = answers.get(str(question.get("question_id")))
            if not refs:
                skipped["questions without answers"] += 1
                continue
            image_id = str(question["image_id"])
            texts = captions.get(image_id, (None, [None]))[1]
            # once per question, shared by its views (one per caption and target)
            asked, qid, targets = question["question"].strip(), str(question["question_id"]), training_targets(refs)
            image = locate(image_id)
            yield from (Example(target=target, clip_text=text, image=image, input_text=asked, id=qid, refs=refs)
                        for text in texts for target in targets)

    return finish(examples(), skipped, options, questions_file, "questions")


def training_targets(answers: list[str]) -> list[str]:
    """The paper's targets: the most common answer, and any answer with ≥ 3 votes or tied with it."""
    votes = Counter(normalize_answer(a) for a in answers)
    top = votes.most_common(1)[0][1]
    return [answer for answer, n in votes.most_common() if n >= MIN_VOTES or n == top]


def vqa_files(path: Path, split: str | None) -> tuple[Path, Path]:
    """The questions file and its annotations file, from either file or a folder and a split."""
    if is_folder(path):
        path = split_file(path, f"*_{split or 'train'}*_questions.json", "VQA questions", split or "train")
    require_file(path, "VQA file")
    if "_questions" in path.name:
        questions = path
    elif "_annotations" in path.name:
        questions = next((q for q in sorted(path.parent.glob("*_questions.json")) if _annotations_of(q) == path), None)
        if questions is None:
            raise InputError("no questions file beside the annotations", str(path), "pass the *_questions.json file")
    else:
        raise InputError("not a VQA file name (expected *_questions.json or *_annotations.json)", str(path),
                         "pass the questions file")
    annotations = _annotations_of(questions)
    if not is_file(annotations):
        raise InputError("no annotations file beside the questions", str(annotations),
                         "VQA needs the answers (the *_annotations.json of the same split)")
    return questions, annotations


def _annotations_of(questions: Path) -> Path:
    """VQA's naming: ``v2_OpenEnded_mscoco_val2014_questions.json`` → ``v2_mscoco_val2014_annotations.json``."""
    name = re.sub(r"(OpenEnded|MultipleChoice)_", "", questions.name).replace("_questions", "_annotations")
    return questions.with_name(name)


def image_captions(options: ReadOptions, questions_file: Path) -> tuple[dict, Path]:
    """{image id: (image path relative to the root, captions)} from the captions file (Karpathy's
    ``dataset_coco.json`` or COCO's ``captions_<split>.json``), and its image root."""
    file = options.captions
    if file is None:
        near = [folder / "dataset_coco.json" for folder in (questions_file.parent, questions_file.parent.parent)]
        file = next((p for p in near if is_file(p)), None)
    if file is None:
        return {}, Path(".")
    captions = {image_id: (relative, texts) for image_id, relative, texts in caption_images(Path(file), None, Counter())}
    return captions, image_root(options, Path(file))


TASK = Task(name="vqa", description="visual question answering (VQA v2)", read=read, noise=0.04,
            max_target_len=16, metric="vqa",
            clip_text_hint="VQA reads its images' captions: pass --captions dataset_coco.json")
