"""`stylecap bench caption`: both paths caption every image; the paper-size path builds on CPU with tiny shapes."""
from __future__ import annotations

import json

import pytest
from test_caption import _one_thread  # noqa: F401  (the same autouse fixture: one torch thread)

from stylecap.experiments.speed import T5_BASE, CaptionBench, bench_caption, synthetic_photos


def test_paper_size_path_runs_with_tiny_shapes(tmp_path):
    """The same code that builds ViT-L/14 + t5-base on a GPU, with shapes small enough for a CPU test."""
    clip_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    lm_cfg = {**T5_BASE, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
              "num_heads": 2, "vocab_size": 2000}  # a vocabulary larger than the tokenizer's, as with t5-base
    report = bench_caption(CaptionBench(images=5, image_size="80x60", paper_size=True, num_beams=2, batch_size=2,
                                        reference_batch_size=2, num_workers=0, clip_cfg=clip_cfg, lm_cfg=lm_cfg),
                           tmp_path / "report.json", show=False)
    assert report.ours.items == report.reference.items == 5
    assert report.ours.seconds > 0 and report.speedup > 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["setup"]["lm_cfg"]["d_model"] == 32 and saved["setup"]["num_beams"] == 2
    assert saved["ours"]["items_per_s"] == pytest.approx(report.ours.items_per_s)


def test_bench_command_writes_a_report(tmp_path, capsys, cli):
    code = cli(["bench", "caption", "--images", "4", "--image-size", "64x48", "--beam", "1", "--batch-size", "2",
                "--workers", "1", "--report", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["benchmark"] == "caption" and report["ours"]["items"] == report["reference"]["items"] == 4
    assert report["speedup"] > 0 and report["environment"]["torch"]
    assert "speedup" in capsys.readouterr().out


def test_synthetic_photos_are_real_jpegs(tmp_path):
    from PIL import Image

    paths = synthetic_photos(tmp_path, 2, (120, 90))
    with Image.open(paths[0]) as image:
        assert image.format == "JPEG" and image.size == (120, 90)
    assert paths[0].read_bytes() != paths[1].read_bytes()
