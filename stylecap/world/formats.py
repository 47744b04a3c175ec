"""Writers of the public on-disk formats, so the task readers meet the world exactly as they meet
the real datasets: COCO-Karpathy captions, VQA v2, SNLI, SNLI-VE, Visual News, style corpora.

Each writer takes the built ``Item`` list of one world and writes one format. Image paths in
records are relative to the world folder; image ids are the PNG file names (``images/<split>/<id>.png``).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

from stylecap.world.scenes import Scene

# SNLI-family files name their validation split "dev".
_SNLI_SPLIT = {"train": "train", "val": "dev", "test": "test"}
_WORD = re.compile(r"[a-z0-9'-]+")


class Item(NamedTuple):
    """One image of the world with every text written about it (see build._texts)."""

    scene: Scene
    texts: dict


def image_path(scene: Scene) -> str:
    return f"images/{scene.split}/{scene.image_id}.png"


def article_path(scene: Scene) -> str:
    return f"news/articles/{scene.image_id}.txt"


def _tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, separators=(",", ":")))


def _dump_lines(records: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_karpathy(items: list[Item], out: Path) -> None:
    """``dataset_coco.json``. Splits keep the world's names (clip, train, pairs, val, test): a
    Karpathy reader selecting "train"/"val"/"test" gets the text-only, validation and test images
    and never the CLIP-pretraining or adapter-fitting ones. ``filepath`` is relative to ``images/``."""
    images, sentid = [], 0
    for item in items:
        scene = item.scene
        sentences = [{"raw": raw, "tokens": _tokens(raw), "imgid": len(images), "sentid": sentid + k}
                     for k, raw in enumerate(item.texts["captions"])]
        images.append({"filepath": scene.split, "filename": f"{scene.image_id}.png", "split": scene.split,
                       "imgid": len(images), "cocoid": scene.image_id,
                       "sentids": [s["sentid"] for s in sentences], "sentences": sentences})
        sentid += len(sentences)
    _dump({"images": images, "dataset": "coco"}, out / "dataset_coco.json")


def _answer_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "number" if answer.isdigit() else "other"


def _question_type(question: str, template: str) -> str:
    # VQA's question types are leading words ("what color is the", "how many", "is there").
    head = template.split("{")[0].strip() if "{" in template else " ".join(question.split()[:2])
    return head.rstrip("?")


def write_vqa(items: list[Item], split: str, out: Path, templates: dict) -> None:
    """``vqa/v2_OpenEnded_world_<split>_questions.json`` and ``vqa/v2_world_<split>_annotations.json``;
    ten identical answers per question, because the world knows each answer exactly."""
    header = {"info": {"description": "stylecap synthetic shapes world"}, "license": {},
              "data_type": "world", "data_subtype": split}
    questions, annotations = [], []
    for item in items:
        image_id = item.scene.image_id
        for k, (question, answer, kind) in enumerate(item.texts["questions"]):
            qid = image_id * 1000 + k  # VQA's own scheme: image id, then the question's index
            questions.append({"image_id": image_id, "question": question, "question_id": qid})
            annotations.append({
                "question_id": qid, "image_id": image_id,
                "question_type": _question_type(question, templates[kind]),
                "answer_type": _answer_type(answer), "multiple_choice_answer": answer,
                "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": i + 1}
                            for i in range(10)]})
    _dump({**header, "task_type": "Open-Ended", "questions": questions},
          out / "vqa" / f"v2_OpenEnded_world_{split}_questions.json")
    _dump({**header, "annotations": annotations}, out / "vqa" / f"v2_world_{split}_annotations.json")


def _binary_parse(tokens: list[str]) -> str:
    # SNLI ships constituency parses; a right-branching tree keeps the fields well-formed.
    return " ".join(["(" + " " + t for t in tokens[:-1]] + [tokens[-1]]) + " )" * (len(tokens) - 1)


def _parse(tokens: list[str]) -> str:
    return "(ROOT (S " + " ".join(f"(X {t})" for t in tokens) + "))"


def _snli_record(item: Item, k: int, hypothesis: str, label: str) -> dict:
    premise = item.texts["captions"][0]
    p, h = _tokens(premise), _tokens(hypothesis)
    return {"annotator_labels": [label], "captionID": f"{item.scene.image_id}#0",
            "gold_label": label, "pairID": f"{item.scene.image_id}#0r{k}",
            "sentence1": premise, "sentence1_binary_parse": _binary_parse(p), "sentence1_parse": _parse(p),
            "sentence2": hypothesis, "sentence2_binary_parse": _binary_parse(h), "sentence2_parse": _parse(h)}


def write_entailment(items: list[Item], split: str, out: Path) -> None:
    """``snli/snli_1.0_<split>.jsonl`` (premise: a caption) and ``snli_ve/snli_ve_<split>.jsonl``
    (premise: the image, ``Flickr30K_ID``; the caption stays as ``sentence1`` as in SNLI-VE)."""
    snli, snli_ve = [], []
    for item in items:
        for k, (hypothesis, label) in enumerate(item.texts["hypotheses"]):
            record = _snli_record(item, k, hypothesis, label)
            snli.append(record)
            snli_ve.append({"Flickr30K_ID": str(item.scene.image_id), **record})
    name = _SNLI_SPLIT[split]
    _dump_lines(snli, out / "snli" / f"snli_1.0_{name}.jsonl")
    _dump_lines(snli_ve, out / "snli_ve" / f"snli_ve_{name}.jsonl")


def write_news(items: list[Item], split: str, out: Path) -> None:
    """``news/<split>_data.json``: a list of Visual News records; ``article_path`` and
    ``image_path`` are relative to the world folder. The article files themselves are written
    with the images (build._make), in parallel."""
    records = [{"id": item.scene.image_id, "caption": item.texts["news"][1], "topic": "arts",
                "source": "world", "image_path": image_path(item.scene), "article_path": article_path(item.scene)}
               for item in items]
    _dump(records, out / "news" / f"{split}_data.json")


def write_styles(items: list[Item], out: Path, voices: list[str]) -> None:
    """``styles/<voice>.jsonl``: a text-only style corpus, one ``{"text", "image_id"}`` record per
    image that has voice texts (the train split: styled captioners never see the test scenes' texts)."""
    for voice in voices:
        _dump_lines([{"text": item.texts["voices"][voice], "image_id": item.scene.image_id}
                     for item in items if "voices" in item.texts],
                    out / "styles" / f"{voice}.jsonl")
