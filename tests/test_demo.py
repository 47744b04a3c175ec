"""`stylecap demo`, reduced: every variant trains, captions held-out images and is scored; the
report follows its schema and the gallery points at real images."""
from __future__ import annotations

import json
import re
from pathlib import Path

from stylecap.demo import CAPTION_VARIANTS, target_checks
from stylecap.world import build_world


def test_reduced_demo_writes_report_and_gallery(tmp_path, capsys):
    from stylecap.cli import main

    world = tmp_path / "world"
    build_world(world, seed=1, size="small", splits={"clip": 0, "train": 40, "pairs": 20, "val": 0, "test": 10})
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--world", str(world), "--steps", "8", "--test-limit", "6"])
    assert "image-trained" in capsys.readouterr().out  # the Rich table
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "stylecap-demo" and report["world"]["test"] == 10
    assert set(report["results"]["caption"]) == set(CAPTION_VARIANTS)
    assert set(report["results"]["style"]) == {"egocentric"}
    for variants in report["results"].values():
        for scores in variants.values():
            assert {"cider", "bleu4", "object_f1", "exact_match"} <= set(scores)
            assert all(len(s["runs"]) == 1 and s["std"] == 0.0 for s in scores.values())
    assert 0 <= report["results"]["style"]["egocentric"]["in_voice"]["mean"] <= 1
    assert report["noise"]["sigma"] > 0 and 0 < report["noise"]["cos_noisy_clean"] < 1
    assert len(report["checks"]) == 6 and all(isinstance(c["pass"], bool) for c in report["checks"])
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
               "style": {"uplifting": _scores(object_f1=0.78, in_voice=0.95)}}
    values = [(c["value"], c["pass"]) for c in target_checks(results, "uplifting")]
    assert values == [(0.9, True), (0.95, True), (0.8889, False), (1.9, True), (0.95, True), (0.975, True)]
