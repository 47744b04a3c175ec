"""`stylecap bench train` and `stylecap bench scale` at their smallest settings, so the code stays alive
(the figures themselves are measured by running the benches; no test reads a timing)."""
from __future__ import annotations

import json

import pytest
from test_caption import _one_thread  # noqa: F401  (the same autouse fixture: one torch thread)

from stylecap.core.tasks import ReadOptions, get_task
from stylecap.errors import UsageError
from stylecap.experiments.scale import CaptionData, run_stage, write_caption_data
from stylecap.experiments.speed import T5_BASE
from stylecap.experiments.train_speed import bench_train
from stylecap.options import ScaleBench, TrainBench


def test_bench_train_command_compares_both_paths(tmp_path, capsys, cli):
    code = cli(["bench", "train", "--size", "tiny", "--steps", "2", "--warmup-steps", "1", "--batch-size", "4",
                "--report", str(tmp_path / "train.json")])
    assert code == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["benchmark"] == "train" and report["unit"] == "samples"
    assert report["ours"]["items"] == report["reference"]["items"] == 2 * 4
    assert report["speedup"] > 0 and report["ours"]["peak_memory_mb"] > 0
    setup = report["setup"]
    assert setup["captions"] == 3 * 4 and setup["cache_build"]["captions"] == setup["distinct_captions"]
    # LoRA and the mapper are a small part of what the reference trains (every LM weight and the mapper)
    assert 0 < setup["trainable_parameters"]["ours"] < setup["trainable_parameters"]["reference"]
    assert setup["reference_precision"] == "fp32" and setup["ours_precision"] in ("fp32", "bf16")
    estimate = setup["coco_estimate"]
    assert estimate["captions"] == 590_000 and estimate["ours_hours"] > 0 and estimate["reference_hours"] > 0
    out = capsys.readouterr().out
    assert "speedup" in out and "COCO-sized job" in out


def test_paper_size_path_runs_with_tiny_shapes(tmp_path):
    """The code that builds ViT-L/14 + t5-base from their configs, with shapes small enough for a test."""
    clip_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}
    lm_cfg = {**T5_BASE, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_decoder_layers": 1,
              "num_heads": 2, "vocab_size": 2000}
    report = bench_train(TrainBench(size="paper", steps=1, warmup_steps=1, batch_size=2, clip_cfg=clip_cfg,
                                    lm_cfg=lm_cfg), tmp_path / "paper.json", show=False)
    assert report.ours.items == report.reference.items == 2
    saved = json.loads((tmp_path / "paper.json").read_text())
    assert saved["setup"]["size"] == "paper" and saved["setup"]["lm_cfg"]["d_model"] == 32
    assert saved["setup"]["clip_cfg"]["embed_dim"] == 16


def test_caption_data_is_a_karpathy_file_the_reader_takes(tmp_path):
    data = write_caption_data(tmp_path, 13)
    lines = data.text.read_text().splitlines()
    assert data.captions == len(lines) == 13
    examples = get_task("caption").read(data.karpathy, ReadOptions(split="train"))
    assert [example.target for example in examples] == lines
    assert len({example.image for example in examples}) == data.images


def test_bench_scale_command_writes_json_and_plot(tmp_path, cli):
    out = tmp_path / "scale"
    code = cli(["bench", "scale", "--sizes", "40,20", "--train-steps", "2", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    report = json.loads((out / "scale.json").read_text())
    rows = {(row["captions"], row["stage"]): row for row in report["rows"]}
    assert set(rows) == {(n, stage) for n in (20, 40) for stage in ("read", "reread", "cache", "train", "corpus")}
    for n in (20, 40):
        assert rows[n, "read"]["examples"] == rows[n, "reread"]["examples"] == n
        assert 0 < rows[n, "cache"]["texts"] <= n and rows[n, "cache"]["embeddings_mb"] > 0
        assert rows[n, "train"]["steps"] == 2
        assert rows[n, "corpus"]["kept"] + sum(rows[n, "corpus"]["dropped"].values()) == n
        assert all(row["peak_rss_mb"] >= row["start_rss_mb"] > 0 for (size, _), row in rows.items() if size == n)
    assert [step["stage"] for step in report["scaling"]] == ["read", "reread", "cache", "train", "corpus"]
    assert all(step["smaller"] == 20 and step["larger"] == 40 for step in report["scaling"])
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.fault
@pytest.mark.parametrize("args, flag", [
    (["train", "--size", "huge"], "--size"),
    (["train", "--steps", "0"], "--steps"),
    (["scale", "--sizes", "10,many"], "--sizes"),
    (["scale", "--sizes", "0"], "--sizes"),
    (["scale", "--stages", "read,dream"], "--stages"),
])
def test_bad_bench_options_are_one_line_and_exit_2(args, flag, cli, capsys):
    assert cli(["bench", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert flag in err and len(err.splitlines()) == 1


@pytest.mark.fault
def test_settings_are_checked_in_the_library_too():
    with pytest.raises(UsageError, match="--batch-size"):
        TrainBench(batch_size=0)
    with pytest.raises(UsageError, match="--train-steps"):
        ScaleBench(train_steps=0)


@pytest.mark.fault
def test_a_failed_stage_process_names_the_stage_and_its_error(tmp_path):
    missing = CaptionData(tmp_path / "gone.json", tmp_path / "gone.txt", 10, 2)
    with pytest.raises(RuntimeError, match=r"stage read at 10 captions exited 1: .*not found"):
        run_stage("read", missing, tmp_path, ScaleBench(sizes="10"))
