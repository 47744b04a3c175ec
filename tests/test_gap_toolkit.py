"""The gap commands end to end on a tiny random CLIP and a few drawn images: pairs readers, statistics,
plots, fitting, training with a fitted adapter and `--noise auto`, and a small sweep."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from stylecap.errors import InputError
from stylecap.paths import asset
from stylecap.workflows.gap_analysis import gap_statistics, read_pairs

CLIP_SEED = 3  # a seeded random init whose pairs in this little world have a positive mean cosine


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    """The tiny CLIP config with seeded random weights, saved as a folder: the same vectors every run."""
    import open_clip

    from stylecap.core.encoders import save_clip

    cfg = json.loads(asset("tiny-clip.json").read_text())
    open_clip.factory._MODEL_CONFIGS["gap-test-tiny"] = cfg
    torch.manual_seed(CLIP_SEED)
    model = open_clip.create_model("gap-test-tiny")
    return str(save_clip(model, cfg, tmp_path_factory.mktemp("clip")))
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "circle", "triangle")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return draw_world(tmp_path_factory.mktemp("gapworld"))


def draw_world(root):
    """24 images of a coloured shape, two captions each, in JSONL and Karpathy form, split 3 ways."""
    (root / "img").mkdir()
    records, karpathy = [], []
    for i in range(24):
        colour, shape = list(COLOURS)[i % 4], SHAPES[i % 3]
        image = Image.new("RGB", (32, 32), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        box = (4 + i % 5, 4, 26, 26 - i % 4)
        if shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        elif shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        else:  # a triangle in the box
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=COLOURS[colour])
        image.save(root / "img" / f"{i}.png")
        split = ("train", "pairs", "test")[i % 3]
        captions = [f"a {colour} {shape}", f"a {shape} that is {colour}"]
        records += [{"image": f"img/{i}.png", "caption": c, "split": split} for c in captions]
        karpathy.append({"filepath": "img", "filename": f"{i}.png", "split": split,
                         "sentences": [{"raw": c} for c in captions]})
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy}))
    return root


def test_pairs_readers_agree_and_select_splits(world):
    jsonl = read_pairs(world / "pairs.jsonl")
    karpathy = read_pairs(world / "dataset_coco.json", images=world)
    assert jsonl.images == karpathy.images and jsonl.captions == karpathy.captions
    assert len(jsonl.images) == 24 and len(jsonl.captions) == 48 and jsonl.image_of[:4] == [0, 0, 1, 1]
    test = read_pairs(world / "dataset_coco.json", images=world, split="test", limit=5)
    assert len(test.images) == 5 and all(int(p.stem) % 3 == 2 for p in test.images)
    with pytest.raises(InputError, match="split 'nope'"):
        read_pairs(world / "pairs.jsonl", split="nope")
    bad = world / "bad.jsonl"
    bad.write_text('{"image": "img/0.png"}\n{oops\n')
    with pytest.raises(InputError, match="1 records without string 'image' and 'caption', 1 malformed lines"):
        read_pairs(bad)


def test_statistics_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    image_of = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5]
    text = F.normalize(images[image_of] + 0.8 * torch.randn(10, 8, generator=gen), dim=-1)
    stats = gap_statistics(text, images[image_of], image_of)
    cos = text @ text.T
    unrelated = [cos[i, j] for i in range(10) for j in range(10) if image_of[i] != image_of[j]]
    assert stats["cos_caption_unrelated_caption"] == pytest.approx(float(torch.stack(unrelated).mean()), abs=1e-5)
    icos = images @ images.T
    assert stats["cos_image_unrelated_image"] == pytest.approx(float((icos.sum() - 6) / 30), abs=1e-5)
    cross = [text[i] @ images[k] for i in range(10) for k in range(6) if image_of[i] != k]
    assert stats["cos_image_unrelated_caption"] == pytest.approx(float(torch.stack(cross).mean()), abs=1e-5)
    assert stats["cos_image_caption"] == pytest.approx(float((text * images[image_of]).sum(1).mean()), abs=1e-6)
    assert sum(stats["pca_explained_variance"]) == pytest.approx(1.0, abs=1e-4)


def test_analyze_writes_json_fields_and_png_plots(world, clip, tmp_path, cli):
    out = tmp_path / "analysis"
    assert cli(["gap", "analyze", "--clip", clip, "--pairs", str(world / "pairs.jsonl"), "--out", str(out),
                "--quiet"]) == 0
    report = json.loads((out / "analysis.json").read_text())
    stats = report["statistics"]
    for key in ("cos_image_caption", "cos_caption_unrelated_caption", "cos_image_unrelated_image",
                "mean_difference_norm", "pca_explained_variance", "pca_cumulative"):
        assert key in stats
    assert stats["pairs"] == 48 and stats["images"] == 24 and stats["dim"] == 32
    assert set(report["adapters_in_sample"]) == {"none", "noise", "mean-shift", "linear", "covariance", "coral", "pseudo-linear"}
    # the fitted shifts bring text closer to its image than no adapter does (in sample)
    effects = report["adapters_in_sample"]
    assert effects["linear"]["cos_shift_only"] > effects["none"]["cos_shift_only"]
    assert effects["mean-shift"]["cos_shift_only"] > effects["none"]["cos_shift_only"]
    for name in ("pca_variance.png", "difference_correlation.png", "projection.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.width > 200
    assert sorted(report["plots"]) == sorted(["pca_variance.png", "difference_correlation.png", "projection.png"])


def test_a_broken_image_in_the_pairs_is_a_one_line_error_naming_it(clip, tmp_path, capsys, cli):
    from stylecap.errors import EXIT_INPUT

    broken = draw_world(tmp_path)
    (broken / "img" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a PNG header and nothing else
    code = cli(["gap", "fit", "--clip", clip, "--pairs", str(broken / "pairs.jsonl"), "--out", str(tmp_path / "gap"),
                "--quiet"])
    assert code == EXIT_INPUT
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: 1 image(s) could not be read") and "5.png" in line
    assert not (tmp_path / "gap" / "gap.json").exists()


def test_fit_then_train_with_fitted_adapter_and_auto_noise(world, clip, tmp_path, cli):
    from safetensors.torch import load_file

    from stylecap.core.model import load_model, read_model_meta

    gap = tmp_path / "gap"
    assert cli(["gap", "fit", "--clip", clip, "--pairs", str(world / "dataset_coco.json"), "--images", str(world),
                "--split", "pairs", "--out", str(gap), "--quiet"]) == 0
    meta = json.loads((gap / "gap.json").read_text())
    assert meta["dim"] == 32 and meta["statistics"]["images"] == 8
    assert set(meta["adapters"]) == {"mean-shift", "linear", "covariance"}
    captions = tmp_path / "caps.txt"
    captions.write_text("".join(f"a {c} {s}\n" for c in COLOURS for s in SHAPES))
    run = tmp_path / "run"
    assert cli(["train", "--data", str(captions), "--clip", clip, "--lm", "tiny-t5", "--steps", "2",
                "--batch-size", "4", "--adapter", "covariance", "--gap", str(gap), "--noise", "auto",
                "--out", str(run), "--quiet"]) == 0
    config = read_model_meta(run / "model")["config"]
    auto = config["extra"]["noise_auto"]
    assert config["adapter"] == "covariance" and config["noise"] == pytest.approx(auto["sigma"])
    assert auto["cos_image_caption"] == pytest.approx(meta["statistics"]["cos_image_caption"])
    assert config["extra"]["gap"]["fit"] == meta["adapters"]["covariance"]
    model = load_model(run / "model")
    fitted = load_file(str(gap / "covariance.safetensors"))
    assert torch.equal(model.adapter.factor, fitted["factor"]) and torch.equal(model.adapter.offset, fitted["offset"])
    assert not model.adapter.training


@pytest.mark.parametrize("args, message", [
    (["--adapter", "linear"], "must be fitted first"),
    (["--noise", "auto"], "needs fitted gap statistics"),
    (["--noise", "loud"], "bad noise level"),
])
def test_train_gap_usage_errors_are_one_line(world, clip, tmp_path, capsys, args, message, cli):
    captions = tmp_path / "caps.txt"
    captions.write_text("a red square\n")
    code = cli(["train", "--data", str(captions), "--clip", clip, "--steps", "1", "--out", str(tmp_path / "r"),
                "--quiet", *args])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]


def test_sweep_tabulates_cider_and_resumes(world, clip, tmp_path, monkeypatch):
    import stylecap.experiments.variants
    from stylecap.experiments.sweep import SweepSpec, run_sweep

    data = world / "dataset_coco.json"
    spec = SweepSpec(clip=clip, lm="tiny-t5", train=data, test=data, pairs=data, images=world, sigmas=[0.0, "auto"],
                     adapters=["linear"], image_trained=True, steps=2, batch_size=4, test_limit=4, progress=False)
    rows = run_sweep(spec, tmp_path / "sweep")
    assert [r["setting"] for r in rows] == ["noise-0.0", "noise-auto", "linear-auto", "image-trained"]
    gap = json.loads((tmp_path / "sweep" / "gap" / "gap.json").read_text())
    assert rows[1]["noise"] == pytest.approx(gap["noise"]["auto_sigma"])
    assert rows[0]["noise"] == 0.0
    assert rows[2]["noise"] == pytest.approx(gap["noise"]["auto_sigma_by_adapter"]["linear"])
    assert all(r["images"] == 4 and len(r["examples"]) == 4 for r in rows)
    table = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "| linear-auto | linear |" in table and "(auto)" in table
    assert all(f"| {r['setting']} |" in table and f"{r['cider']:.3f} |" in table for r in rows)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(stylecap.experiments.variants, "train_task", no_training)
    assert run_sweep(spec, tmp_path / "sweep") == rows  # finished settings are read back, not retrained
    spec.steps = 3  # another budget is another model: trained, not read back
    with pytest.raises(AssertionError, match="trained again"):
        run_sweep(spec, tmp_path / "sweep")


def test_noise_report_gives_each_fitted_adapter_its_sigma_or_none():
    from stylecap.core.gap import COS_AFTER, auto_noise
    from stylecap.workflows.gap_analysis import noise_report

    stats = {"cos_image_caption": 0.5, "dim": 16}
    fits = {"linear": {COS_AFTER: 0.9}, "mean-shift": {COS_AFTER: -0.01}}  # a shift that leaves no alignment
    report = noise_report(stats, fits=fits)
    assert report["auto_sigma"] == pytest.approx(auto_noise(stats, 16))
    assert report["auto_sigma_by_adapter"] == {"linear": pytest.approx(auto_noise({"cos_image_caption": 0.9}, 16)),
                                               "mean-shift": None}
