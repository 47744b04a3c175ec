"""The world's tiny CLIP: the shipped checkpoint loads and reproduces its shipped stats; the
training recipe runs end to end and its hard negatives swap colours between objects."""
from __future__ import annotations

import json
import random

import pytest
import torch

from stylecap.world import build_world, load_scenes
from stylecap.world.clip import STAT_LABELS, _swapped, check_world, clip_stats, shipped_stats, train_clip


def test_shipped_clip_loads_and_matches_its_stats():
    from stylecap.core.encoders import load_clip

    encoder = load_clip("world", device="cpu")
    vecs = encoder.encode_texts(["a big red circle", "a small blue square"])
    assert vecs.shape == (2, encoder.dim) and torch.allclose(vecs.norm(dim=1), torch.ones(2), atol=1e-4)
    shipped = {json.dumps(s["world"], sort_keys=True): s for s in shipped_stats()}
    world = check_world()
    measured = clip_stats("world", world)
    expected = shipped[json.dumps(measured["world"], sort_keys=True)]
    for key in STAT_LABELS:
        assert measured[key] == pytest.approx(expected[key], abs=0.01), key
    # the two properties the CLIP was trained for: it sees, and the gap is real (an image is far from
    # its own caption (real ViT-L/14 on COCO: 0.26) and the two modalities' means are far apart)
    assert measured["r1_image_to_text"] > 0.5 and measured["r1_text_to_image"] > 0.5
    assert measured["cos_image_own_caption"] < 0.7 and measured["gap_norm"] > 0.5


def test_hard_negatives_swap_colours_between_objects(tmp_path):
    scene = next(s for s in load_scenes(check_world()).values() if len(s.objects) == 3)
    swapped = _swapped(scene, random.Random(0))
    before = [(o.shape, o.colour) for o in scene.objects]
    after = [(o.shape, o.colour) for o in swapped.objects]
    changed = [i for i in range(3) if before[i] != after[i]]
    assert len(changed) == 2
    i, j = changed
    assert after[i][1] == before[j][1] and after[j][1] == before[i][1]
    assert sorted(c for _, c in before) == sorted(c for _, c in after)


def test_training_writes_a_loadable_clip(tmp_path):
    from stylecap.core.encoders import load_clip

    world = tmp_path / "world"
    build_world(world, seed=3, size="small", splits={"clip": 24, "train": 0, "pairs": 0, "val": 0, "test": 6})
    lines = []
    out = train_clip(world, tmp_path / "clip", steps=2, batch_size=8, log=lines.append)
    assert lines[-1].startswith("step 2/2")
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["steps"] == 2 and recipe["world"]["seed"] == 3
    stats = clip_stats(str(out), world)
    assert stats["world"]["images"] == 6 and set(STAT_LABELS) <= set(stats)
    assert load_clip(str(out), device="cpu").encode_images([world / "images/test/30.png"]).shape[0] == 1


def test_cli_prints_shipped_stats_and_explains_missing_options(capsys, cli):
    assert cli(["world", "clip", "--stats"]) == 0
    printed = capsys.readouterr().out
    assert "R@1 image→text" in printed and "mean text‖" in printed
    assert f"{shipped_stats()[0]['r1_text_to_image']:.3f}" in printed
    assert cli(["world", "clip"]) == 2
