"""`stylecap demo`, reduced: every variant trains, captions held-out images and is scored; the
report follows its schema and the gallery points at real images."""
from __future__ import annotations

import json
import re
from pathlib import Path

from stylecap.experiments.demo import ANSWER_VARIANTS, CAPTION_VARIANTS, target_checks
from stylecap.experiments.variants import plan
from stylecap.world import build_world


def test_reduced_demo_writes_report_and_gallery(tmp_path, capsys, cli):
    world = tmp_path / "world"
    build_world(world, seed=1, size="small", splits={"clip": 0, "train": 40, "pairs": 20, "val": 0, "test": 10})
    out = tmp_path / "demo"
    code = cli(["demo", "--out", str(out), "--world", str(world), "--steps", "8", "--test-limit", "6",
                "--tasks", "caption,vqa,ve,style"])
    assert code == 0
    assert "image-trained" in capsys.readouterr().out  # the Rich table
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "stylecap-demo" and report["world"]["test"] == 10
    assert set(report["results"]["caption"]) == set(CAPTION_VARIANTS)
    assert set(report["results"]["style"]) == {"egocentric"}
    for task in ("caption", "style"):
        for scores in report["results"][task].values():
            assert {"cider", "bleu4", "object_f1", "exact_match"} <= set(scores)
    for task in ("vqa", "ve"):  # answered on held-out test images, scored by the world's exact answers
        assert set(report["results"][task]) == set(ANSWER_VARIANTS)
        assert all(0 <= scores["accuracy"]["mean"] <= 1 for scores in report["results"][task].values())
    for variants in report["results"].values():
        for scores in variants.values():
            assert all(len(s["runs"]) == 1 and s["std"] == 0.0 for s in scores.values())
    assert report["noise"]["sigma"] > 0 and 0 < report["noise"]["cos_noisy_clean"] < 1
    # every planned check whose variants ran (the sweep's two need the sweep variants), in the plan's order
    planned = [c["target"].format(voice="egocentric") for c in plan()["checks"]]
    sweep_only = {"best fitted adapter CIDEr-D ≥ noise alone",
                  "σ auto within 3 CIDEr-D points of the best swept σ (auto − best)"}
    levers = {*plan()["variants"]["levers"], *plan()["variants"]["answer_levers"], "egocentric+projection",
              *(f"{name}+rerank" for name in plan()["rerank"]["variants"])}  # the bench's reranked rows
    lever_only = {c["target"].format(voice="egocentric") for c in plan()["checks"]  # the bench's regimes
                  if any(ref.format(voice="egocentric").rpartition(":")[2].rpartition(".")[0] in levers
                         for ref in c["a"] + c.get("b", []))}
    assert [c["target"] for c in report["checks"]] == [t for t in planned if t not in sweep_only | lever_only]
    assert all(c["pass"] == (c["value"] >= c["bar"]) for c in report["checks"])
    gallery = (out / "gallery.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', gallery)
    assert len(sources) == 6 and all((out / src).is_file() and not Path(src).is_absolute() for src in sources)
    assert gallery.count("<th>egocentric</th>") == 6


def _scores(**means) -> dict:
    return {metric: {"mean": value, "std": 0.0, "runs": [value]} for metric, value in means.items()}


def test_target_checks_compare_against_the_reference():
    results = {"caption": {"image-trained": _scores(cider=1.0, object_f1=0.9),
                           "noise": _scores(cider=0.95, object_f1=0.8),
                           "no-noise": _scores(cider=0.5, object_f1=0.4)},
               "vqa": {"image-trained": _scores(accuracy=0.8), "noise": _scores(accuracy=0.76),
                       "no-noise": _scores(accuracy=0.7)},
               "style": {"uplifting": _scores(object_f1=0.78, in_voice=0.95)}}
    values = [(c["value"], c["pass"]) for c in target_checks(results, "uplifting")]
    assert values == [(0.9, True), (0.95, True), (0.8889, False), (1.9, True), (0.95, True), (1.0857, False),
                      (0.95, True), (0.975, True)]


def test_sweep_checks_compare_adapters_and_auto_sigma():
    cider = {"no-noise": 0.4, "noise": 0.80, "noise-0.06": 0.82, "noise-0.2": 0.7, "mean-shift": 0.85,
             "linear": 0.78, "covariance": 0.81, "image-trained": 0.9}
    results = {"caption": {name: _scores(cider=value, object_f1=0.5) for name, value in cider.items()}}
    checks = {c["target"]: (c["value"], c["pass"]) for c in target_checks(results, "uplifting")}
    assert checks["best fitted adapter CIDEr-D ≥ noise alone"] == (1.0625, True)
    assert checks["σ auto within 3 CIDEr-D points of the best swept σ (auto − best)"] == (-2.0, True)
    assert not any(name.startswith("style") for name in checks)  # style did not run


def test_models_and_world_are_not_reused_across_clips_or_world_formats(tmp_path):
    import shutil

    from stylecap.core.encoders import BUILTIN_CLIPS
    from stylecap.experiments.demo import CAPTION_VARIANTS, DemoSpec, _ensure_world
    from stylecap.experiments.variants import Budget, run_key
    from stylecap.paths import asset

    # two CLIP folders that differ only in one weight byte: the same spec text, other models
    first, second = tmp_path / "clip-a", tmp_path / "clip-b"
    for folder in (first, second):
        shutil.copytree(asset(BUILTIN_CLIPS["world"]), folder)
    weights = second / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    data = tmp_path / "captions.txt"
    data.write_text("a red circle\n")
    keys = []
    for folder in (first, second):
        shutil.move(folder, tmp_path / "clip")  # the same path, hence the same spec text
        keys.append(run_key("caption", CAPTION_VARIANTS["noise"], data, None, Budget(clip=str(tmp_path / "clip")), None))
        shutil.move(tmp_path / "clip", folder)
    assert keys[0] != keys[1]
    before = run_key("caption", CAPTION_VARIANTS["noise"], data, None, Budget(clip=str(first)), None)
    data.write_text("a blue square, rewritten\n")  # rewritten data (a rebuilt world) is another model too
    assert run_key("caption", CAPTION_VARIANTS["noise"], data, None, Budget(clip=str(first)), None) != before
    tiny = {"clip": 0, "train": 4, "pairs": 2, "val": 0, "test": 2}
    spec = DemoSpec(out=tmp_path / "demo", world_splits=tiny)
    world = _ensure_world(spec)
    info = json.loads((world / "world.json").read_text())
    (world / "world.json").write_text(json.dumps({**info, "version": info["version"] - 1}))
    assert json.loads((_ensure_world(spec) / "world.json").read_text())["version"] == info["version"]
