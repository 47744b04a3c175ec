"""Task readers on tiny fixtures in the public formats (Karpathy COCO, VQA v2, SNLI, SNLI-VE, Visual
News), with malformed records and missing images, and on a synthetic world's files."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from stylecap.core.tasks import ReadOptions, get_task, task_names
from stylecap.core.tasks.vqa import training_targets
from stylecap.errors import InputError, UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
# Images that exist in a dataset copy; the fixtures also name images that are absent.
PRESENT = {"images/val2014/COCO_val2014_000000000042.jpg": "red", "images/val2014/COCO_val2014_000000000073.jpg": "blue",
           "images/train2014/COCO_train2014_000000000009.jpg": "yellow",
           "images/flickr30k/1000092795.jpg": "red", "images/flickr30k/1000268201.jpg": "blue",
           "news/bbc/images/1001.jpg": "red"}


def make_dataset(root: Path) -> Path:
    """A copy of the fixtures with a few small images drawn in (others deliberately missing)."""
    shutil.copytree(FIXTURES, root, dirs_exist_ok=True)
    for relative, colour in PRESENT.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 32), colour).save(root / relative)
    return root


@pytest.fixture()
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


def read(task: str, path: Path, **options):
    return get_task(task).read(path, ReadOptions(**options))


def test_all_tasks_registered():
    assert {"caption", "vqa", "ve", "news", "style"} <= set(task_names())
    assert get_task("caption").noise_for("multiple") == 0.04 and get_task("caption").noise_for("single") == 0.12
    assert (get_task("vqa").noise, get_task("ve").noise) == (0.04, 0.08)
    assert [get_task(t).max_target_len for t in ("caption", "vqa", "ve")] == [32, 16, 8]


def test_karpathy_single_mode_splits_and_bad_records(dataset):
    test = read("caption", dataset / "dataset_coco.json", split="test")
    assert [ex.id for ex in test] == ["42"] * 3 + ["73"] * 2 + ["74"] * 2
    first = test[0]
    assert first.target == first.clip_text == "A red circle on a white background." and len(first.refs) == 3
    assert first.image == str(dataset / "images/val2014/COCO_val2014_000000000042.jpg")  # default root: images/
    train = read("caption", dataset / "dataset_coco.json", split="train")
    assert {ex.id for ex in train} == {"9", "25"}  # Karpathy's restval images train too
    every = read("caption", dataset, split=None)  # a folder: its dataset_*.json
    assert every.skipped == {"malformed image records": 1, "images without captions": 1}
    assert len(every) == 10


def test_karpathy_multiple_mode_pairs_each_caption_with_the_others(dataset):
    examples = read("caption", dataset / "dataset_coco.json", split=None, mode="multiple")
    per_image = [(ex.clip_text, ex.target) for ex in examples if ex.id == "42"]
    assert len(per_image) == 6 and all(source != target for source, target in per_image)
    assert examples.skipped["images with one caption (multiple mode needs two)"] == 1  # cocoid 25
    with pytest.raises(UsageError):
        read("caption", dataset / "captions.txt", mode="multiple")
    with pytest.raises(UsageError):
        read("caption", dataset / "dataset_coco.json", mode="several")


def test_plain_caption_file_and_limit(dataset):
    examples = read("caption", dataset / "captions.txt", limit=2)
    assert [ex.target for ex in examples] == ["A red circle on a white background.", "A blue square."]
    with pytest.raises(InputError):
        read("caption", dataset / "dataset_coco.json", split="nosuchsplit")


def test_vqa_targets_follow_the_papers_rule():
    assert training_targets(["red"] * 10) == ["red"]
    assert training_targets(["1"] * 5 + ["one"] + ["2"] * 3 + ["3"]) == ["1", "2"]  # "one" counts as "1"; 2 has 3 votes
    assert training_targets(["yes"] * 4 + ["no"] * 4 + ["maybe"] * 2) == ["yes", "no"]  # tied with the most common
    assert training_targets(["triangle"] * 7 + ["a triangle"] * 2 + ["pyramid"]) == ["triangle"]


def test_vqa_pairs_questions_with_captions(dataset):
    examples = read("vqa", dataset / "vqa", split="val2014")
    assert examples.skipped == {"questions without answers": 1, "malformed questions": 1}
    counting = [ex for ex in examples if ex.id == "42001"]
    assert {(ex.clip_text, ex.target) for ex in counting} == {(c, t) for c in ("A red circle on a white background.",
                                                               "A crimson disc.", "A red round shape in the middle.")
                                                              for t in ("1", "2")}
    assert counting[0].input_text == "How many shapes are there?" and len(counting[0].refs) == 10
    assert counting[0].image == str(dataset / "images/val2014/COCO_val2014_000000000042.jpg")
    # The annotations file names the same pair.
    assert len(read("vqa", dataset / "vqa/v2_mscoco_val2014_annotations.json")) == len(examples)


def test_vqa_without_captions_finds_images_by_id(dataset, tmp_path):
    (dataset / "dataset_coco.json").unlink()
    examples = read("vqa", dataset / "vqa/v2_OpenEnded_mscoco_val2014_questions.json")
    assert all(ex.clip_text is None for ex in examples)
    by_id = {ex.id: ex.image for ex in examples}
    assert by_id["42000"].endswith("COCO_val2014_000000000042.jpg") and by_id["74000"] is None  # 74: no image
    with pytest.raises(InputError):  # a folder without the split's file: bad input, as for every task
        read("vqa", dataset / "vqa", split="test2015")


def test_snli_skips_unlabelled_and_malformed_lines(dataset):
    examples = read("ve", dataset / "snli", split="val")  # SNLI's validation file is "dev"
    assert examples.skipped == {"pairs without a gold label": 1, "malformed lines": 1}
    assert [ex.target for ex in examples] == ["entailment", "contradiction", "neutral"]
    first = examples[0]
    assert (first.clip_text, first.input_text) == ("A red circle on a white background.", "There is a circle.")
    assert first.image == str(dataset / "images/flickr30k/1000092795.jpg")  # from captionID


def test_snli_ve_names_images_by_flickr_id(dataset):
    examples = read("ve", dataset / "snli_ve/snli_ve_test.jsonl")
    assert examples.skipped == {"malformed lines": 1}
    # a missing image keeps Flickr30k's name for it, so evaluation names it (and counts it once)
    assert [Path(ex.image).name for ex in examples] == \
        ["1000092795.jpg", "1000092795.jpg", "1000268201.jpg", "1000344755.jpg"]
    assert not Path(examples[3].image).exists()


def test_visual_news_records(dataset):
    examples = read("news", dataset / "news")
    assert examples.skipped == {"records whose article is missing": 1, "malformed records": 1}
    first = examples[0]
    assert first.target == first.clip_text == "A red circle unveiled at the city museum."
    assert first.input_text.startswith("The city museum opened") and first.image.endswith("bbc/images/1001.jpg")
    assert examples[1].image.endswith("bbc/images/1002.jpg")  # named where it should be, so evaluation names it
    assert not Path(examples[1].image).exists()  # its image file is absent


def test_readers_give_the_same_examples_with_their_values_spilled(dataset, monkeypatch):
    from stylecap.core.tasks import spill

    def both():
        return [read("caption", dataset / "dataset_coco.json", split=None), read("vqa", dataset / "vqa", split="val2014"),
                read("caption", dataset / "dataset_coco.json", split=None, mode="multiple")]

    held = both()
    monkeypatch.setattr(spill, "BLOCK", 2)  # every two values go to a memory-mapped file
    spilled = both()
    assert spilled == held
    assert [s.skipped for s in spilled] == [h.skipped for h in held]
    assert [list(s.values("clip_text")) for s in spilled] == [list(h.values("clip_text")) for h in held]


def test_readers_read_a_synthetic_world(tmp_path):
    from stylecap.world import build_world

    world = tmp_path / "world"
    build_world(world, seed=3, size="small", image_size=16,
                splits={"clip": 0, "train": 6, "pairs": 0, "val": 2, "test": 3}, workers=1)
    captions = read("caption", world / "dataset_coco.json", split="test")
    assert len({ex.id for ex in captions}) == 3 and all(Path(ex.image).is_file() for ex in captions)
    vqa = read("vqa", world / "vqa", split="train")
    assert all(ex.clip_text and ex.input_text and len(ex.refs) == 10 and Path(ex.image).is_file() for ex in vqa)
    snli = read("ve", world / "snli", split="train")
    snli_ve = read("ve", world / "snli_ve", split="test")
    assert all(ex.target in ("entailment", "neutral", "contradiction") for ex in [*snli, *snli_ve])
    assert all(Path(ex.image).is_file() for ex in snli_ve)
    news = read("news", world / "news", split="val")
    assert len(news) == 2 and all(ex.input_text and Path(ex.image).is_file() for ex in news)
    style = read("style", world / "styles" / sorted(p.name for p in (world / "styles").iterdir())[0])
    assert len(style) >= 6 and all(ex.target == ex.clip_text for ex in style)  # at least the train images


def test_examples_hold_each_distinct_value_once():
    from stylecap.core.tasks import Example, Examples

    # VQA's shape: every question paired with each of its image's captions
    views = [Example(target=f"answer {q % 3}", clip_text=f"caption {c}", image=f"img{q % 7}.jpg",
                     input_text=f"question {q}", id=str(q), refs=["yes", "no"]) for q in range(500) for c in range(5)]
    examples = Examples(views)
    assert len(examples) == 2500 and list(examples) == views and examples == views
    assert len(examples.values("clip_text")) == 5 and len(examples.values("refs")) == 1
    assert [examples.values("clip_text")[c] for c in examples.codes("clip_text")[:6]] == [f"caption {c}" for c in (0, 1, 2, 3, 4, 0)]
    assert list(examples.column("image"))[7 * 5] == "img0.jpg"
    assert examples[5:10] == views[5:10] and examples[-1] == views[-1]
    examples.skipped["malformed lines"] = 2
    picked = examples.select([40, 3, 3])  # code by code, in the order asked, repeats kept
    assert picked == [views[40], views[3], views[3]] and picked.skipped == {"malformed lines": 2}
    picked.append(Example(target="new answer", clip_text="caption 0"))
    picked.skipped["missing images"] = 1
    assert len(examples) == 2500 and examples == views and examples.skipped == {"malformed lines": 2}


def test_a_limit_stops_reading():
    from collections import Counter

    from stylecap.core.tasks import Example, finish

    def stream():
        yield from (Example(target=str(i), clip_text=str(i)) for i in range(3))
        raise AssertionError("read past the limit")

    assert len(finish(stream(), Counter(), ReadOptions(limit=3), Path("x"), "rows")) == 3


def test_coco_official_captions_file(dataset):
    official = dataset / "annotations" / "captions_val2014.json"
    examples = read("caption", official, images=dataset / "images" / "val2014")
    assert [(ex.id, ex.target) for ex in examples] == [("42", "A red circle on a white background."),
                                                       ("42", "A red disc."), ("73", "A blue square.")]
    assert all(Path(ex.image).is_file() for ex in examples) and examples[0].refs == ["A red circle on a white background.", "A red disc."]
    assert examples.skipped == {"malformed image records": 1, "malformed caption records": 2, "images without captions": 1}
    folder = read("caption", dataset / "annotations", split="val2014", images=dataset / "images" / "val2014")
    assert folder == examples  # a folder: its captions_<split>*.json
    # VQA reads the same file as its images' captions, and finds the images by id under the root
    vqa = read("vqa", dataset / "vqa", split="val2014", captions=official, images=dataset / "images")
    first = [ex for ex in vqa if ex.id == "42000"]
    assert [ex.clip_text for ex in first] == ["A red circle on a white background.", "A red disc."]
    assert first[0].image == str(dataset / "images/val2014/COCO_val2014_000000000042.jpg")
