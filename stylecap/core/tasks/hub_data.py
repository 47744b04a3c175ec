"""Datasets in the Hugging Face way: a folder written by ``save_to_disk``, parquet files (one file, or
a folder of them such as a hub repository's ``data/``), or ``hf:ORG/NAME[:SPLIT]`` for a hub dataset
(downloaded by ``datasets``; online).

Rows are read by their public column names and written once, into the cache, as the file format
the task's reader already knows (Karpathy captions, VQA v2 questions + annotations, SNLI JSONL,
Visual News records, a sentence file), so every reader, check and count applies unchanged. The
conversion is keyed by the dataset's fingerprint: a changed dataset is converted anew.

Columns read (the first present wins):

| task | columns |
|---|---|
| caption | text: sentences, captions, caption, text, raw; image: cocoid, image_id, imgid, img_id, id; file: filepath + filename, file_name, image_path |
| vqa | question, question_id, image_id, answers (or multiple_choice_answer, answer) |
| ve | premise / sentence1, hypothesis / sentence2, label / gold_label (class ids by the dataset's label names), Flickr30K_ID / image_id / filename |
| news | caption, article (or article_path), image_path, id |
| style | text, sentence, caption, content |

An ``image`` column holding the pictures themselves is written out as files for evaluation on
images (``with_images``), under the converted folder's ``images/``.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from stylecap.errors import InputError, first_line
from stylecap.paths import cache_root, text_digest

HUB_PREFIX = "hf:"
CONVERTER_VERSION = 1
# A reader's split → the names datasets use for it.
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "dev"), "test": ("test",)}
CAPTION_TEXT = ("sentences", "captions", "caption", "text", "raw")
IMAGE_ID = ("cocoid", "image_id", "imgid", "img_id", "id")
IMAGE_FILE = ("file_name", "filename", "image_path", "path")
SNLI_LABELS = ("entailment", "neutral", "contradiction")  # SNLI's class ids, in its order


def is_dataset(ref: str | Path | None) -> bool:
    """A hub dataset name, a parquet file, or a folder written by ``datasets`` or holding parquet files."""
    if ref is None:
        return False
    if str(ref).startswith(HUB_PREFIX):
        return True
    path = Path(ref)
    if path.is_file():
        return path.suffix == ".parquet"
    if not path.is_dir():
        return False
    markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    return any((path / name).is_file() for name in markers) or next(path.rglob("*.parquet"), None) is not None


@dataclass
class Converted:
    path: Path  # the file (or folder) the task's reader reads
    split: str | None  # the split to ask that reader for
    provenance: dict  # what the model records about its data


def task_files(ref: str | Path, task: str, split: str | None, with_images: bool = False) -> Converted:
    """The dataset's ``split`` (a reader's name: train, val, test) as the task's file format."""
    dataset, source, chosen = _load(ref, split)
    key = text_digest([json.dumps([source, chosen, dataset._fingerprint, task, with_images, CONVERTER_VERSION])])
    folder = cache_root() / "datasets" / "converted" / f"{task}-{key}"
    target = folder / _OUTPUT[task]
    if not target.exists():
        _convert(dataset, task, split or "train", folder, with_images)
    provenance = {"description": f"{source} ({chosen} split)", "source": source, "split": chosen}
    if str(ref).startswith(HUB_PREFIX):
        provenance["hub_id"] = source
    return Converted(target, split if task == "caption" else None, provenance)


# ----------------------------------------------------------------------------- loading

def _load(ref: str | Path, split: str | None):
    """(the Dataset of the chosen split, the source's name, the chosen split's name)."""
    import datasets

    datasets.disable_progress_bars()
    text = str(ref)
    explicit = None
    try:
        if text.startswith(HUB_PREFIX):
            name, _, explicit = text[len(HUB_PREFIX):].partition(":")
            source, loaded = name, datasets.load_dataset(name)
        elif Path(text).is_dir() and not next(Path(text).rglob("*.parquet"), None):
            source, loaded = Path(text).name, datasets.load_from_disk(text)
        else:
            source, loaded = Path(text).name, datasets.load_dataset("parquet", data_files=_parquet_files(Path(text)))
    except FileNotFoundError as exc:
        raise InputError(f"dataset not found: {first_line(exc, 160)}", text, "check the path or the hub name") from None
    except ConnectionError as exc:
        raise InputError(f"could not download the dataset: {first_line(exc, 160)}", text,
                         "go online (unset HF_DATASETS_OFFLINE), or save it with `save_to_disk` and pass the folder") from None
    except Exception as exc:  # datasets and pyarrow raise many kinds for a malformed dataset
        raise InputError(f"could not read the dataset: {first_line(exc, 200)}", text,
                         "pass a folder written by `save_to_disk`, parquet files, or hf:ORG/NAME") from None
    if isinstance(loaded, datasets.Dataset):
        return loaded, source, explicit or split or "train"
    chosen = _choose_split(list(loaded), explicit, split, text)
    return loaded[chosen], source, chosen


def _parquet_files(path: Path) -> dict[str, list[str]]:
    """Parquet files grouped by the split their names start with (hub layout: ``train-00000-of-00002``)."""
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    groups: dict[str, list[str]] = defaultdict(list)
    for file in files:
        stem = file.stem.lower()
        split = next((name for names in SPLIT_NAMES.values() for name in names if stem.startswith(name)), "train")
        groups[split].append(str(file))
    return dict(groups)


def _choose_split(available: list[str], explicit: str | None, split: str | None, where: str) -> str:
    wanted = (explicit,) if explicit else SPLIT_NAMES.get(split or "train", (split,))
    found = next((name for name in wanted if name in available), None)
    if found is None and not explicit and len(available) == 1:
        found = available[0]
    if found is None:
        raise InputError(f"the dataset has no {'/'.join(wanted)} split (it has {', '.join(available)})", where,
                         "name one: hf:ORG/NAME:SPLIT, or --split")
    return found


# ----------------------------------------------------------------------------- conversion

def _convert(dataset, task: str, split: str, folder: Path, with_images: bool) -> None:
    """Write the converted files into a temporary folder, then rename it: a reader never sees half."""
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    image_file = _image_writer(dataset, tmp, with_images)
    _WRITERS[task](dataset, split, tmp, image_file)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def _column(dataset, names: Iterable[str], what: str, required: bool = True) -> str | None:
    found = next((name for name in names if name in dataset.column_names), None)
    if found is None and required:
        raise InputError(f"the dataset has no {what} column (looked for {', '.join(names)}; it has "
                         f"{', '.join(dataset.column_names)})", "--data", "rename the column to one of those")
    return found


def _rows(dataset, columns: list[str | None]) -> Iterable[dict]:
    """Rows with only the named columns (pictures are never decoded here)."""
    kept = [c for c in dict.fromkeys(columns) if c]
    return dataset.select_columns(kept).to_iterable_dataset() if kept else iter(())


def _image_writer(dataset, folder: Path, with_images: bool) -> Callable[[int, str], str | None]:
    """(row index, image name) → the file name the row's picture was written to in ``images/`` (None
    without pictures), for an ``image`` column of pictures, when they are wanted. Rows about one
    image (VQA's questions) write it once; the readers find it by its name, the image's id."""
    from datasets import Image

    column = next((name for name, feature in dataset.features.items() if isinstance(feature, Image)), None)
    if not with_images or column is None:
        return lambda index, name: None
    raw = dataset.cast_column(column, Image(decode=False))
    out = folder / "images"
    out.mkdir()

    written: dict[str, str] = {}

    def write(index: int, name: str) -> str | None:
        if name in written:
            return written[name]
        value = raw[index][column]
        if not value or not value.get("bytes"):
            return None
        suffix = Path(value.get("path") or "").suffix.lower() or _sniff(value["bytes"])
        file = written[name] = f"{Path(name).stem}{suffix}"
        (out / file).write_bytes(value["bytes"])
        return file

    return write


def _sniff(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"


def _texts(value) -> list[str]:
    """Caption texts from the shapes datasets use: a string, a list of strings, Karpathy's list of
    ``{raw}`` records, or a column of records stored as lists (``{"raw": [...]}``)."""
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, dict):
        return _texts(value.get("raw") or value.get("text") or [])
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def _write_captions(dataset, split: str, folder: Path, image_file) -> None:
    text = _column(dataset, CAPTION_TEXT, "caption text")
    image_id = _column(dataset, IMAGE_ID, "image id", required=False)
    path_col = _column(dataset, ("filepath",), "", required=False)
    file_col = _column(dataset, IMAGE_FILE, "", required=False)
    split_col = _column(dataset, ("split",), "", required=False)
    images: dict[str, dict] = {}
    for index, row in enumerate(_rows(dataset, [text, image_id, path_col, file_col, split_col])):
        key = str(row[image_id]) if image_id else str(index)
        record = images.get(key)
        if record is None:  # rows with one caption each (COCO's own layout) gather under their image
            written = image_file(index, key)
            filename = written or (str(row[file_col]) if file_col and row[file_col] else f"{key}.jpg")
            record = images[key] = {"filepath": "" if written else str(row[path_col] or "") if path_col else "",
                                    "filename": filename, "cocoid": key, "sentences": [],
                                    "split": str(row[split_col]) if split_col and row[split_col] else split}
        record["sentences"] += [{"raw": t} for t in _texts(row[text])]
    _dump({"images": list(images.values()), "dataset": "converted"}, folder / _OUTPUT["caption"])


def _answers(value, fallback) -> list[str]:
    """VQA's ten answers: a list of ``{answer}`` records, a record of lists, or plain strings."""
    if isinstance(value, dict):
        value = value.get("answer") or []
    answers = [a.get("answer") if isinstance(a, dict) else a for a in value or []]
    answers = [str(a) for a in answers if a not in (None, "")]
    return answers or ([str(fallback)] if fallback not in (None, "") else [])


def _write_vqa(dataset, split: str, folder: Path, image_file) -> None:
    question = _column(dataset, ("question",), "question")
    image_id = _column(dataset, ("image_id",), "image id")
    qid = _column(dataset, ("question_id",), "", required=False)
    answers = _column(dataset, ("answers",), "", required=False)
    single = _column(dataset, ("multiple_choice_answer", "answer"), "answers", required=answers is None)
    questions, annotations = [], []
    for index, row in enumerate(_rows(dataset, [question, image_id, qid, answers, single])):
        number = row[qid] if qid else index
        image_file(index, str(row[image_id]))
        questions.append({"image_id": row[image_id], "question": row[question], "question_id": number})
        annotations.append({"question_id": number, "image_id": row[image_id],
                            "answers": [{"answer": a} for a in _answers(row[answers] if answers else None,
                                                                         row[single] if single else None)]})
    _dump({"questions": questions}, folder / _OUTPUT["vqa"])
    _dump({"annotations": annotations}, folder / "v2_hf_annotations.json")


def _label_names(dataset, column: str) -> list[str]:
    names = getattr(dataset.features[column], "names", None)
    return list(names) if names else list(SNLI_LABELS)


def _write_entailment(dataset, split: str, folder: Path, image_file) -> None:
    premise = _column(dataset, ("premise", "sentence1"), "premise", required=False)
    hypothesis = _column(dataset, ("hypothesis", "sentence2"), "hypothesis")
    label = _column(dataset, ("label", "gold_label"), "label")
    image = _column(dataset, ("Flickr30K_ID", "flickr30k_id", "image_id", "filename"), "", required=False)
    pair = _column(dataset, ("pairID", "pair_id", "id"), "", required=False)
    names = _label_names(dataset, label)
    with open(folder / _OUTPUT["ve"], "w", encoding="utf-8") as handle:
        for index, row in enumerate(_rows(dataset, [premise, hypothesis, label, image, pair])):
            value = row[label]
            gold = names[value] if isinstance(value, int) and 0 <= value < len(names) else \
                value if isinstance(value, str) else "-"  # SNLI's -1: no consensus, skipped by the reader
            written = image_file(index, Path(str(row[image])).stem if image else str(index))
            record = {"sentence1": row[premise] if premise else None, "sentence2": row[hypothesis], "gold_label": gold,
                      "pairID": str(row[pair]) if pair else str(index)}
            if written or image:
                record["Flickr30K_ID"] = Path(written).stem if written else Path(str(row[image])).stem
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_news(dataset, split: str, folder: Path, image_file) -> None:
    caption = _column(dataset, ("caption",), "caption")
    article = _column(dataset, ("article", "article_text", "text"), "", required=False)
    article_path = _column(dataset, ("article_path",), "article", required=article is None)
    image_path = _column(dataset, ("image_path",), "", required=False)
    ident = _column(dataset, ("id",), "", required=False)
    (folder / "articles").mkdir()
    records = []
    for index, row in enumerate(_rows(dataset, [caption, article, article_path, image_path, ident])):
        if article:  # articles as text: written as the files Visual News records point at
            (folder / "articles" / f"{index}.txt").write_text(row[article] or "", encoding="utf-8")
        written = image_file(index, str(row[ident]) if ident else str(index))
        records.append({"id": row[ident] if ident else index, "caption": row[caption],
                        "article_path": f"articles/{index}.txt" if article else row[article_path],
                        "image_path": f"images/{written}" if written else row[image_path] if image_path else None})
    _dump(records, folder / _OUTPUT["news"])


def _write_sentences(dataset, split: str, folder: Path, image_file) -> None:
    text = _column(dataset, ("text", "sentence", "caption", "content"), "text")
    with open(folder / _OUTPUT["style"], "w", encoding="utf-8") as handle:
        for index, row in enumerate(_rows(dataset, [text])):
            if isinstance(row[text], str) and row[text].strip():
                handle.write(json.dumps({"id": f"row-{index}", "text": row[text].strip()}, ensure_ascii=False) + "\n")


def _dump(data, path: Path) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False))


_WRITERS = {"caption": _write_captions, "vqa": _write_vqa, "ve": _write_entailment, "news": _write_news,
            "style": _write_sentences}
# The file each task's reader is given (VQA's annotations sit beside its questions, by VQA's naming).
_OUTPUT = {"caption": "dataset_hf.json", "vqa": "v2_OpenEnded_hf_questions.json", "ve": "snli_hf.jsonl",
           "news": "data.json", "style": "sentences.jsonl"}
