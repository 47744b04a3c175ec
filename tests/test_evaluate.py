"""Each task trains a few steps on the fixtures and is evaluated end to end, on images and on text,
with tiny local models (random-init 32-d CLIP, tiny T5)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tasks import make_dataset

from stylecap.core.model import read_model_meta
from stylecap.core.tasks import ReadOptions
from stylecap.errors import InputError, UsageError
from stylecap.options import ModelChoices, TrainOptions
from stylecap.workflows.evaluate import evaluate, metrics_table
from stylecap.workflows.pipeline import default_noise, train_task

CLIP = str(Path(__file__).resolve().parents[1] / "stylecap" / "assets" / "tiny-clip.json")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tasks") / "data")


def quick_train(task: str, data: Path, out: Path, **kwargs) -> Path:
    read_options = kwargs.pop("read_options", ReadOptions(split=None))
    options = TrainOptions(out_dir=out, steps=3, batch_size=4, progress=False, checkpoint_every=1000)
    # Short greedy decoding keeps the tests fast; the overrides are recorded in the model.
    choices = ModelChoices(clip=CLIP, lm="tiny-t5", max_target_len=6, num_beams=1)
    return train_task(task, data, choices, options, read_options, **kwargs)


def test_caption_trains_on_text_and_evaluates_on_images_and_text(dataset, tmp_path):
    model = quick_train("caption", dataset / "dataset_coco.json", tmp_path / "run",
                        read_options=ReadOptions(split="test", mode="multiple"))
    config = read_model_meta(model)["config"]
    assert config["noise"] == pytest.approx(default_noise(0.04, 32))  # the multiple-mode σ, rescaled to 32-d
    assert config["extra"]["read"]["mode"] == "multiple"
    assert config["max_target_len"] == 6 and config["generation"] == {"num_beams": 1}
    on_images = evaluate(model, dataset / "dataset_coco.json", input="images", meteor=False, progress=False)
    report = on_images.report
    assert report["items"] == 2 and report["skipped"]["missing images"] == 1  # cocoid 74 has no file
    assert on_images.incomplete and set(report["scores"]) >= {"BLEU-4", "CIDEr-D", "ROUGE-L"}
    records = [json.loads(line) for line in on_images.predictions.read_text().splitlines()]
    assert [r["id"] for r in records] == ["42", "73"] and all("image" in r for r in records)
    on_text = evaluate(model, dataset / "dataset_coco.json", input="text", meteor=False, progress=False)
    assert on_text.report["items"] == 3 and not on_text.incomplete
    assert on_text.metrics == tmp_path / "run" / "eval" / "test-text" / "metrics.json"
    # On text, the caption the model reads is not among the references it is scored against.
    first = json.loads(on_text.predictions.read_text().splitlines()[0])
    assert first["clip_text"] not in first["references"] and len(first["references"]) == 2
    metrics_table(report)  # renders without error
    from stylecap.core import rerank as reranking

    chosen, rank = [], reranking.rerank

    def spy(candidates, vectors, encoder, keep=1):
        assert all(len(options) == 4 for options in candidates)  # four samples judged per image
        chosen.extend(options[0][0] for options in rank(candidates, vectors, encoder, keep))
        return rank(candidates, vectors, encoder, keep)

    reranked_out = tmp_path / "run" / "eval" / "test-images-rerank4"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reranking, "rerank", spy)
        reranked = evaluate(model, dataset / "dataset_coco.json", input="images", meteor=False, progress=False,
                            rerank=4)
    assert reranked.predictions.parent == reranked_out and on_images.predictions.exists()  # the greedy run kept
    assert [json.loads(line)["prediction"] for line in reranked.predictions.read_text().splitlines()] == chosen
    assert reranked.report["decoding"] == {"rerank": 4} and reranked.report["items"] == 2
    card = json.loads((model / "evaluations.json").read_text())
    assert {e["input"] for e in card} >= {"images", "images, best of 4 samples by CLIP"}
    with pytest.raises(UsageError, match="--input text"):
        evaluate(model, dataset / "dataset_coco.json", input="text", progress=False, rerank=4)
    with pytest.raises(UsageError, match="vqa model"):
        evaluate(quick_train("vqa", dataset / "vqa", tmp_path / "vqa", read_options=ReadOptions(split="val2014")),
                 dataset / "vqa", split="val2014", progress=False, rerank=4)


def test_vqa_trains_on_captions_and_scores_official_accuracy(dataset, tmp_path):
    model = quick_train("vqa", dataset / "vqa", tmp_path / "run", read_options=ReadOptions(split="val2014"),
                        val=dataset / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json")
    val = json.loads((tmp_path / "run" / "val" / "metrics.json").read_text())  # --val: on text (no --images)
    assert val["input"] == "text" and val["items"] == 4 and 0.0 <= val["scores"]["accuracy"] <= 1.0
    result = evaluate(model, dataset / "vqa", input="images", split="val2014", progress=False, out=tmp_path / "eval")
    assert result.report["items"] == 3 and result.report["skipped"]["missing images"] == 1
    assert set(result.report["scores"]) == {"accuracy"}


def test_ve_trains_on_snli_and_evaluates_on_snli_ve(dataset, tmp_path):
    model = quick_train("ve", dataset / "snli", tmp_path / "run", read_options=ReadOptions(split="val"))
    result = evaluate(model, dataset / "snli_ve", input="images", progress=False)
    report = result.report
    assert report["items"] == 3
    assert report["skipped"] == {"malformed lines": 1, "missing images": 1}
    assert set(report["scores"]) >= {"accuracy", "accuracy_entailment"}


def test_news_and_the_image_trained_reference(dataset, tmp_path):
    model = quick_train("news", dataset / "news", tmp_path / "text")
    result = evaluate(model, dataset / "news", input="text", split=None, meteor=False, progress=False)
    assert result.report["items"] == 2 and "CIDEr-D" in result.report["scores"]
    reference = quick_train("caption", dataset / "dataset_coco.json", tmp_path / "images", input="images")
    extra = read_model_meta(reference)["config"]["extra"]
    assert extra["read"]["trained_on"] == "images" and extra["read"]["skipped"]["missing images"] == 2


def test_all_images_missing_is_an_error(dataset, tmp_path):
    model = quick_train("ve", dataset / "snli", tmp_path / "run", read_options=ReadOptions(split="val"))
    with pytest.raises(InputError, match="none of the 2 images"):  # 3 pairs, 2 pictures: images are counted
        evaluate(model, dataset / "snli", input="images", split="val", images=tmp_path / "nowhere", progress=False)


def test_eval_command_exit_codes_and_outputs(dataset, tmp_path, capsys, cli):
    model = quick_train("ve", dataset / "snli", tmp_path / "run", read_options=ReadOptions(split="val"))
    out = tmp_path / "out"
    # one SNLI-VE image is missing: scored without it, exit 6
    code = cli(["eval", "--model", str(model), "--data", str(dataset / "snli_ve"), "--out", str(out), "--quiet"])
    assert code == 6
    assert (out / "predictions.jsonl").is_file() and json.loads((out / "metrics.json").read_text())["items"] == 3
    assert "accuracy" in capsys.readouterr().out
    code = cli(["eval", "--model", str(model), "--data", str(dataset / "snli_ve"), "--input", "sound", "--quiet"])
    assert code == 2


def test_image_vectors_are_cached_until_a_file_changes(tmp_path, monkeypatch):
    import os

    import torch
    from PIL import Image

    import stylecap.core.vectors
    from stylecap.core.encoders import load_clip
    from stylecap.core.vectors import encode_image_files

    paths = []
    for i, colour in enumerate(["red", "blue", "green"]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (40, 40), colour).save(paths[-1])
    encoder = load_clip(CLIP, device="cpu")
    first, failures = encode_image_files(encoder, paths, progress=False)
    assert not failures and len(first) == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:  # the same files again: read from the cache, nothing decoded
        patch.setattr(stylecap.core.vectors, "iter_image_vectors", no_decoding)
        again, _ = encode_image_files(encoder, paths, progress=False)
    assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first)
    Image.new("RGB", (40, 40), "white").save(paths[0])  # an edited image is encoded anew
    os.utime(paths[0], ns=(0, 0))
    edited, _ = encode_image_files(encoder, paths, progress=False)
    assert not torch.allclose(edited[str(paths[0])], first[str(paths[0])])
    assert torch.equal(edited[str(paths[1])], first[str(paths[1])])
