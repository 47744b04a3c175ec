"""The shapes world: determinism, public-format validity, and texts that are true of their scenes."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylecap.errors import InputError, UsageError
from stylecap.world import build_world, is_in_voice, load_scenes, parse_caption, relation_holds, score_captions, vocab

TINY = {"clip": 6, "train": 12, "pairs": 4, "val": 4, "test": 6}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_world(out, seed=0, size="small", splits={"clip": 100, "pairs": 20}, workers=2)
    return out


@pytest.fixture(scope="module")
def scenes(world):
    return load_scenes(world)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_files_whatever_the_workers(tmp_path):
    build_world(tmp_path / "a", seed=5, splits=TINY, workers=1)
    build_world(tmp_path / "b", seed=5, splits=TINY, workers=2)
    build_world(tmp_path / "c", seed=6, splits=TINY, workers=1)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a["scenes.jsonl"] != c["scenes.jsonl"]
    assert a["images/test/30.png"] != c["images/test/30.png"]


def test_splits_are_disjoint_and_complete(world, scenes):
    info = json.loads((world / "world.json").read_text())
    assert len(scenes) == sum(info["splits"].values())
    for split, n in info["splits"].items():
        assert len(list((world / "images" / split).glob("*.png"))) == n
        assert sum(s.split == split for s in scenes.values()) == n


def test_karpathy_captions_file(world, scenes):
    data = json.loads((world / "dataset_coco.json").read_text())
    assert data["dataset"] == "coco"
    sentids = []
    for img in data["images"]:
        assert (world / "images" / img["filepath"] / img["filename"]).is_file()
        assert img["split"] == scenes[img["cocoid"]].split
        assert len(img["sentences"]) == 5 and len({s["raw"] for s in img["sentences"]}) == 5
        assert [s["sentid"] for s in img["sentences"]] == img["sentids"]
        assert all(s["imgid"] == img["imgid"] and s["tokens"] for s in img["sentences"])
        sentids += img["sentids"]
    assert len(set(sentids)) == len(sentids)


def _captions(world) -> dict[int, list[str]]:
    data = json.loads((world / "dataset_coco.json").read_text())
    return {img["cocoid"]: [s["raw"] for s in img["sentences"]] for img in data["images"]}


def test_every_caption_names_every_object_and_states_only_true_relations(world, scenes):
    captions = _captions(world)
    for k in range(5):
        scores = score_captions({i: caps[k] for i, caps in captions.items()}, scenes)
        assert scores["object_f1"] == 1.0 and scores["exact_match"] == 1.0
        assert scores["relation_accuracy"] == 1.0 and scores["relations_stated"] > 0


def test_corrupted_captions_score_lower(scenes):
    many = {i: s for i, s in scenes.items() if len(s.objects) == 3}
    colours = list(vocab()["colours"])

    def caption(scene, swap=False, drop=False):
        objs = list(scene.objects)[: 2 if drop else 3]
        words = [f"a {o.size} {colours[(colours.index(o.colour) + swap) % len(colours)]} {o.shape}" for o in objs]
        a, b = scene.objects[:2]
        rel = next(r for r in ("left", "right", "above", "below") if relation_holds(a, r, b))
        return ", ".join(words) + f"; the {a.shape} is {vocab()['relations'][rel][0]} the {b.shape}."

    assert score_captions({i: caption(s) for i, s in many.items()}, many)["object_f1"] == 1.0
    swapped = score_captions({i: caption(s, swap=True) for i, s in many.items()}, many)
    assert swapped["object_f1"] == 0.0 and swapped["relation_accuracy"] == 0.0
    dropped = score_captions({i: caption(s, drop=True) for i, s in many.items()}, many)
    assert dropped["object_f1"] == pytest.approx(0.8) and dropped["exact_match"] == 0.0
    inverse = vocab()["inverse_relation"]
    wrong = {}
    for i, s in many.items():
        text = caption(s)
        rel = next(r for r in inverse if f" is {vocab()['relations'][r][0]} the" in text)
        wrong[i] = text.replace(f" is {vocab()['relations'][rel][0]} ", f" is {vocab()['relations'][inverse[rel]][0]} ")
    assert score_captions(wrong, many)["relation_accuracy"] == 0.0


@pytest.mark.parametrize("text, objects, relations", [
    ("A big crimson disc.", [("large", "red", "circle")], []),
    ("To the left of a tiny azure star there is a huge lemon box.",
     [("small", "blue", "star"), ("large", "yellow", "square")], [(1, "left", 0)]),
    ("A small red circle and a large blue star; the circle is above the star.",
     [("small", "red", "circle"), ("large", "blue", "star")], [(0, "above", 1)]),
    ("I see a little violet plus sign beneath a big rose star!",
     [("small", "purple", "cross"), ("large", "pink", "star")], [(0, "below", 1)]),
    ("A red circle and the green circle.", [(None, "red", "circle"), (None, "green", "circle")], []),
])
def test_parse_caption(text, objects, relations):
    parsed = parse_caption(text)
    assert parsed.objects == objects and parsed.relations == relations


def test_style_voices_name_every_object_in_their_voice(world, scenes):
    voices = list(vocab()["voices"])
    assert {"egocentric", "uplifting"} <= set(voices)
    for voice in voices:
        records = _jsonl(world / "styles" / f"{voice}.jsonl")
        assert {scenes[r["image_id"]].split for r in records} == {"train"}
        texts = {r["image_id"]: r["text"] for r in records}
        assert score_captions(texts, scenes, voice=voice)["object_f1"] == 1.0
        assert all(is_in_voice(t, voice) for t in texts.values())
        assert not any(is_in_voice(t, other) for t in texts.values() for other in voices if other != voice)
    neutral = [c for caps in _captions(world).values() for c in caps]
    assert not any(is_in_voice(c, v) for c in neutral for v in voices)
    with pytest.raises(UsageError):
        is_in_voice("hello", "pirate-ish")


def test_vqa_files(world, scenes):
    for split in ("train", "val", "test"):
        questions = json.loads((world / "vqa" / f"v2_OpenEnded_world_{split}_questions.json").read_text())
        annotations = json.loads((world / "vqa" / f"v2_world_{split}_annotations.json").read_text())
        by_id = {a["question_id"]: a for a in annotations["annotations"]}
        assert questions["task_type"] == "Open-Ended"
        assert [q["question_id"] for q in questions["questions"]] == list(by_id)
        for q in questions["questions"]:
            a = by_id[q["question_id"]]
            scene = scenes[q["image_id"]]
            assert scene.split == split and a["image_id"] == q["image_id"]
            assert len(a["answers"]) == 10 and {x["answer"] for x in a["answers"]} == {a["multiple_choice_answer"]}
            assert a["answer_type"] in ("yes/no", "number", "other") and a["question_type"]
            _check_answer(q["question"], a["multiple_choice_answer"], scene)


def _check_answer(question: str, answer: str, scene) -> None:
    """Recompute the answers that can be read straight off the scene."""
    words = question.rstrip("?").split()
    if question == "how many shapes are there?":
        assert answer == str(len(scene.objects))
    elif question.startswith("what color is the"):
        assert answer == next(o.colour for o in scene.objects if o.shape == words[-1])
    elif question.startswith("what shape is the"):
        assert answer == next(o.shape for o in scene.objects if o.colour == words[-2])
    elif question.startswith("is there"):
        present = any((o.colour, o.shape) == (words[-2], words[-1]) for o in scene.objects)
        assert answer == ("yes" if present else "no")


def test_entailment_files(world, scenes):
    for name in ("train", "dev", "test"):
        snli = _jsonl(world / "snli" / f"snli_1.0_{name}.jsonl")
        ve = _jsonl(world / "snli_ve" / f"snli_ve_{name}.jsonl")
        assert len(snli) == len(ve) > 0
        for record, ve_record in zip(snli, ve, strict=True):
            assert record["gold_label"] in ("entailment", "neutral", "contradiction")
            assert record["annotator_labels"] == [record["gold_label"]]
            assert ve_record["sentence2"] == record["sentence2"]
            scene = scenes[int(ve_record["Flickr30K_ID"])]
            assert (world / "images" / scene.split / f"{scene.image_id}.png").is_file()
            _check_hypothesis(record["sentence2"], record["gold_label"], scene)
        labels = Counter(r["gold_label"] for r in snli)
        assert labels["entailment"] == labels["neutral"] == labels["contradiction"]


def _check_hypothesis(hypothesis: str, label: str, scene) -> None:
    """Hypotheses with a relation: true ones entail, false ones contradict."""
    parsed = parse_caption(hypothesis)
    if not parsed.relations:
        return
    (i, rel, j), = parsed.relations
    by_shape = {o.shape: o for o in scene.objects}
    holds = relation_holds(by_shape[parsed.objects[i][2]], rel, by_shape[parsed.objects[j][2]])
    assert label == ("entailment" if holds else "contradiction")


def test_news_records(world, scenes):
    for split in ("train", "val", "test"):
        records = json.loads((world / "news" / f"{split}_data.json").read_text())
        assert len(records) == sum(s.split == split for s in scenes.values())
        for r in records:
            article = (world / r["article_path"]).read_text()
            assert (world / r["image_path"]).is_file()
            # the caption needs the article: it repeats the invented event it names
            event = article.split("Visitors to ")[1].split(" in ")[0]
            assert event in r["caption"]
        assert score_captions({r["id"]: r["caption"] for r in records}, scenes)["object_f1"] == 1.0


def test_images_show_their_scenes(world, scenes):
    last = max(scenes.values(), key=lambda s: s.image_id)
    image = Image.open(world / "images" / last.split / f"{last.image_id}.png")
    assert last.split == "test" and image.size == (64, 64) and image.mode == "RGB"
    for scene in list(scenes.values())[:50]:
        pixels = np.asarray(Image.open(world / "images" / scene.split / f"{scene.image_id}.png"), dtype=int)
        cell = 64 / 3
        for o in scene.objects:
            x, y = int((o.col + 0.5 + o.dx) * cell), int((o.row + 0.5 + o.dy) * cell)
            # object colour ± its tint, the lighting gradient and the texture
            assert np.abs(pixels[y, x] - vocab()["colours"][o.colour]["rgb"]).max() <= 48


def test_bad_requests_fail_with_one_line(tmp_path, world):
    with pytest.raises(UsageError, match="not empty"):
        build_world(world, splits=TINY)
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="not empty"):
        build_world(tmp_path, splits=TINY)
    with pytest.raises(UsageError):
        build_world(tmp_path / "x", size="huge")
    with pytest.raises(UsageError):
        build_world(tmp_path / "x", splits={"holdout": 3})
    with pytest.raises(InputError):
        load_scenes(tmp_path)


def test_unfinished_build_is_redone(tmp_path):
    build_world(tmp_path, seed=1, splits=TINY)
    (tmp_path / "world.json").unlink()  # as if interrupted before the end
    (tmp_path / "images" / "test" / "30.png").unlink()
    build_world(tmp_path, seed=1, splits=TINY)
    assert (tmp_path / "images" / "test" / "30.png").is_file() and (tmp_path / "world.json").is_file()


def test_cli_build(tmp_path):
    from stylecap.cli import main

    out = tmp_path / "w"
    args = ["world", "build", "--out", str(out), "--image-size", "32", "--workers", "1"]
    main(args + [f"--split={k}={v}" for k, v in TINY.items()])
    assert Image.open(out / "images" / "clip" / "1.png").size == (32, 32)
    main(args + ["--force"] + [f"--split={k}={v}" for k, v in TINY.items()])
    with pytest.raises(SystemExit) as exc:
        main(args + ["--split", "clip"])
    assert exc.value.code == 2
