"""The captioner shipped with stylecap (``stylecap/assets/captioner``): what `stylecap caption PHOTOS`
uses when no model is given and none was trained on this machine.

It is trained text-only on the shapes world, with the fitted linear gap adapter (the bench's best
captioner) and the tiny T5 trained whole, then scored on the world's held-out test images. It names
shapes, colours and places on a 3×3 grid; it is not a photo captioner, and the line `caption`
prints when it uses it says so. Reproduce it (a few MB) with

    python -m stylecap.experiments.shipped_captioner --out stylecap/assets/captioner

which writes the model folder, its model card, and ``recipe.json`` (this command, the settings and
the scores it reached).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stylecap.core.encoders import load_clip
from stylecap.core.model import CONFIG_FILE
from stylecap.core.tasks import ReadOptions, get_task
from stylecap.core.vectors import image_vectors
from stylecap.experiments.variants import Budget, Variant, caption_vectors, coco_scores, train_variant
from stylecap.workflows.evaluate import one_per_item
from stylecap.workflows.gap_analysis import PairSource, fit_gap
from stylecap.workflows.model_card import record_evaluation, write_model_card
from stylecap.world import build_world, load_scenes, score_captions

COMMAND = "python -m stylecap.experiments.shipped_captioner --out stylecap/assets/captioner"
CLIP = "world"  # the shipped world CLIP


@dataclass
class Recipe:
    world_seed: int = 0
    # no clip split (the CLIP ships); enough pairs to fit the linear adapter; the test split scores it
    world_splits: dict = field(default_factory=lambda: {"clip": 0, "train": 2000, "pairs": 1000, "val": 0, "test": 200})
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    seed: int = 0
    adapter: str = "linear"


def train_shipped_captioner(out: Path, recipe: Recipe | None = None, work: Path | None = None,
                            progress: bool = True) -> dict:
    """Train the captioner in ``work`` (a temporary folder by default) and write it to ``out``."""
    recipe, start = recipe or Recipe(), time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work or tmp)
        world = root / "world"
        if not (world / "world.json").is_file():
            build_world(world, seed=recipe.world_seed, size="default", splits=recipe.world_splits, force=True,
                        progress=progress)
        captions = world / "dataset_coco.json"
        if not (root / "gap" / "gap.json").is_file():
            fit_gap(PairSource(CLIP, captions, world / "images", "pairs", progress=progress), root / "gap")
        budget = Budget(clip=CLIP, steps=recipe.steps, batch_size=recipe.batch_size, lr=recipe.lr, seed=recipe.seed,
                        max_target_len=40, progress=progress)
        model_dir = train_variant("caption", Variant(recipe.adapter, "text", "auto", recipe.adapter), captions,
                                  ReadOptions(split="train"), budget, root / "gap", root / "runs")
        scores, items = _test_scores(model_dir, world, progress)
        _publish(model_dir, Path(out), recipe, scores, items, time.time() - start)
    return scores


def _test_scores(model_dir: Path, world: Path, progress: bool) -> tuple[dict, int]:
    """CIDEr-D and BLEU-4 against the references, object F1 and exact scenes against the known scenes,
    on the world's held-out test images."""
    test = one_per_item(get_task("caption").read(world / "dataset_coco.json", ReadOptions(split="test")))
    test, vectors = image_vectors(load_clip(CLIP), test, str(world), progress=progress)
    texts = dict(zip((ex.id for ex in test), caption_vectors(model_dir, vectors, test, progress=progress), strict=True))
    scores = {**coco_scores(texts, {ex.id: ex.refs for ex in test}), **score_captions(texts, load_scenes(world))}
    return {k: round(scores[k], 4) for k in ("cider", "bleu4", "object_f1", "exact_match")}, len(texts)


def _publish(model_dir: Path, out: Path, recipe: Recipe, scores: dict, items: int, seconds: float) -> None:
    """Copy the model to ``out`` with its provenance made portable (no paths of the training
    machine), its card, and the recipe."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("README.md", "evaluations.json"))
    meta = json.loads((out / CONFIG_FILE).read_text())
    extra = _portable(meta["config"]["extra"])
    extra["dataset"] = {"description": f"the stylecap shapes world (synthetic, {recipe.world_splits['train']:,} "
                                       f"training images, seed {recipe.world_seed}): captions only, no image"}
    meta["config"]["extra"] = extra
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    write_model_card(out)
    record_evaluation(out, {"data": "shapes world test split", "dataset": "stylecap shapes world", "split": "test",
                            "input": "images", "items": items, "scores": scores})
    (out / "recipe.json").write_text(json.dumps({"command": COMMAND, **asdict(recipe), "test_scores": scores,
                                                 "test_images": items, "seconds": round(seconds)}, indent=2) + "\n")


def _portable(value):
    """``value`` with every absolute path replaced by its last name."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the model folder")
    parser.add_argument("--work", type=Path, help="keep the world and the run here (default: a temporary folder)")
    parser.add_argument("--steps", type=int, default=Recipe.steps, help="training steps")
    args = parser.parse_args(argv)
    scores = train_shipped_captioner(args.out, Recipe(steps=args.steps), args.work)
    print(f"captioner written to {args.out}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
