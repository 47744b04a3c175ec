"""`stylecap demo` and `stylecap bench quality`: CLOSE end to end on the synthetic world.

One run builds (or reuses) a world, fits the modality gap on its ``pairs`` split, trains text-only
captioners (no noise; noise at the σ the gap implies; mean shift + that noise), an image-trained
reference and a style-voice captioner on the same step budget, captions the held-out ``test``
images and scores them: coco-caption's CIDEr-D and BLEU-4 against the world's references, and
the world's exact object F1, scene match and relation accuracy against the known scenes.

The demo and the quality bench are the same code: the bench uses a default-size world, longer
training and several seeds, and checks the targets.
"""
from __future__ import annotations

import html
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stylecap.core.encoders import load_clip, resolve_clip
from stylecap.core.gap import auto_noise, expected_cosine, read_gap
from stylecap.core.tasks import Examples, ReadOptions, get_task
from stylecap.core.vectors import image_vectors
from stylecap.errors import UsageError
from stylecap.experiments.variants import (
    Budget,
    Variant,
    caption_vectors,
    coco_scores,
    plan,
    plan_variants,
    train_variant,
)
from stylecap.paths import file_digest
from stylecap.workflows.evaluate import evaluate, one_per_item
from stylecap.workflows.gap_analysis import PairSource, fit_gap
from stylecap.world import build_world, load_scenes, score_captions
from stylecap.world.build import VERSION as WORLD_VERSION

PLAN = plan()
CAPTION_VARIANTS = plan_variants("caption")
SWEEP_VARIANTS = plan_variants("sweep")
ANSWER_VARIANTS = plan_variants("answer")
ANSWER_DATA = {task: tuple(folders) for task, folders in PLAN["answer_data"].items()}
TASKS = ("caption", "vqa", "ve", "style")
METRICS = {"cider": "CIDEr-D", "bleu4": "BLEU-4", "object_f1": "obj F1", "exact_match": "exact",
           "relation_accuracy": "rel acc", "in_voice": "voice", "accuracy": "acc"}  # report key → table header
REPORT_FORMAT = "stylecap-demo"
_DEMO = PLAN["demo"]


@dataclass
class DemoSpec:
    out: Path
    world: Path | None = None  # default: <out>/world, built when missing
    world_size: str = _DEMO["world_size"]
    world_splits: dict | None = field(default_factory=lambda: dict(_DEMO["world_splits"]))
    world_seed: int = 0
    clip: str = "world"
    lm: str = "tiny-t5"
    steps: int = _DEMO["steps"]
    batch_size: int = _DEMO["batch_size"]
    lr: float = _DEMO["lr"]
    seeds: list[int] = field(default_factory=lambda: list(_DEMO["seeds"]))
    voice: str = "egocentric"
    tasks: list[str] = field(default_factory=lambda: list(_DEMO["tasks"]))
    sweep: bool = False  # also train the sweep variants
    test_limit: int | None = None
    gallery_size: int = _DEMO["gallery_size"]
    progress: bool = True

    def __post_init__(self):
        if not self.seeds or self.steps < 1:
            raise UsageError("the demo needs at least one seed and one step", "--seeds / --steps")
        if "caption" not in self.tasks or set(self.tasks) - set(TASKS):
            raise UsageError(f"bad task list {','.join(self.tasks)}", "--tasks",
                             f"choose from {', '.join(TASKS)}; caption is always needed (the other tasks compare to it)")


def quality_spec(out: Path, **overrides) -> DemoSpec:
    """The quality bench: a default-size world, full step budgets, several seeds (``[quality]`` in the plan)."""
    quality = {key: value for key, value in PLAN["quality"].items()}
    return DemoSpec(**{"out": out, "world_splits": None, **quality, **overrides})


def run_demo(spec: DemoSpec) -> dict:
    """Train, caption and score every variant for every seed; writes ``report.json`` and
    ``gallery.html`` into ``spec.out`` and returns the report."""
    start = time.time()
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    world = _ensure_world(spec)
    gap_dir = _fit_gap(spec, world, out / "gap")
    test, vectors = _test_images(spec, world)
    refs = {ex.id: ex.refs for ex in test}
    scenes = load_scenes(world)
    runs: dict[str, dict[str, list[dict]]] = {task: {} for task in spec.tasks}
    captions: dict[str, dict[str, str]] = {}  # variant → image id → caption (first seed)
    for seed in spec.seeds:
        for task, variant, model_dir in _train_all(spec, world, gap_dir, seed, out / "runs"):
            if task in ANSWER_DATA:
                runs[task].setdefault(variant, []).append(_answer_scores(spec, model_dir, world / ANSWER_DATA[task][2]))
                continue
            texts = dict(zip((ex.id for ex in test), caption_vectors(model_dir, vectors, test, progress=spec.progress), strict=True))
            runs[task].setdefault(variant, []).append(_score(texts, refs, scenes, spec.voice if task == "style" else None))
            captions.setdefault(variant, texts)
    report = _report(spec, world, gap_dir, runs, time.time() - start)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_gallery(out / "gallery.html", test[: spec.gallery_size], captions, out)
    return report


def _ensure_world(spec: DemoSpec) -> Path:
    """The user's world, or the demo's own; built when missing (the demo's own also when an older
    stylecap wrote it)."""
    world = Path(spec.world or Path(spec.out) / "world")
    info = json.loads((world / "world.json").read_text()) if (world / "world.json").exists() else {}
    # the demo's own world follows the code; a world the user names is used as it is
    if not info or (not spec.world and info.get("version") != WORLD_VERSION):
        build_world(world, seed=spec.world_seed, size=spec.world_size, splits=spec.world_splits, force=True,
                    progress=spec.progress)
    return world


def _fit_gap(spec: DemoSpec, world: Path, gap_dir: Path) -> Path:
    """The gap on the world's pairs split, fitted once per CLIP and pairs file (refitted when either changes)."""
    pairs = world / "dataset_coco.json"
    if (gap_dir / "gap.json").exists():
        fitted = read_gap(gap_dir)
        if fitted.get("clip_identity") == resolve_clip(spec.clip).identity \
                and fitted["pairs"].get("digest") == file_digest(pairs):
            return gap_dir
    fit_gap(PairSource(spec.clip, pairs, world / "images", "pairs", progress=spec.progress), gap_dir)
    return gap_dir


def _test_images(spec: DemoSpec, world: Path):
    examples = one_per_item(get_task("caption").read(world / "dataset_coco.json", ReadOptions(split="test")))
    if spec.test_limit:
        examples = Examples(examples[: spec.test_limit], examples.skipped)
    return image_vectors(load_clip(spec.clip), examples, str(world), progress=spec.progress)


def _train_all(spec: DemoSpec, world: Path, gap_dir: Path, seed: int, root: Path):
    """(task, variant, model folder) for each variant of each task, trained or reused."""
    # The longest three-object captions run to ~34 tiny-t5 tokens: just over the task's default 32.
    caption = Budget(clip=spec.clip, lm=spec.lm, steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr,
                     seed=seed, max_target_len=40, progress=spec.progress)
    train = ReadOptions(split="train")
    jobs = [("caption", variant, world / "dataset_coco.json", train, caption) for variant in _caption_variants(spec)]
    answers = Budget(**{**asdict(caption), "max_target_len": None})
    for task in (t for t in spec.tasks if t in ANSWER_DATA):
        text_data, image_data, _ = ANSWER_DATA[task]
        jobs += [(task, variant, world / (image_data if variant.input == "images" else text_data), train, answers)
                 for variant in ANSWER_VARIANTS.values()]
    if "style" in spec.tasks:
        voice = Variant(spec.voice, "text", "auto", "noise")  # the style model: noise at the auto σ
        jobs.append(("style", voice, world / "styles" / f"{spec.voice}.jsonl", None, caption))
    for task, variant, data, read, budget in jobs:
        yield task, variant.name, train_variant(task, variant, data, read, budget, gap_dir, root)


def _caption_variants(spec: DemoSpec) -> list:
    return list({**CAPTION_VARIANTS, **(SWEEP_VARIANTS if spec.sweep else {})}.values())


def _answer_scores(spec: DemoSpec, model_dir: Path, test: Path) -> dict:
    """Accuracy on the held-out test images (VQA: the official accuracy; VE: label accuracy)."""
    result = evaluate(model_dir, test, input="images", split="test", out=model_dir.parent / "eval",
                      limit=spec.test_limit, num_beams=1, progress=spec.progress)
    return {"accuracy": result.report["scores"]["accuracy"]}


def _score(captions: dict[str, str], refs: dict[str, list[str]], scenes: dict, voice: str | None) -> dict:
    world = score_captions(captions, scenes, voice=voice)
    scores = {**coco_scores(captions, refs), **{k: world[k] for k in ("object_f1", "exact_match", "relation_accuracy")}}
    if voice:
        scores["in_voice"] = world["in_voice"]
    return scores


# ----------------------------------------------------------------------------- report

def _summary(runs: list[dict]) -> dict:
    """Per metric: mean, std (0 for one run) and each run's value."""
    out = {}
    for metric in runs[0]:
        values = [r[metric] for r in runs if r[metric] is not None]
        if values:
            out[metric] = {"mean": round(statistics.fmean(values), 4),
                           "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
                           "runs": [round(v, 4) for v in values]}
    return out


def _report(spec: DemoSpec, world: Path, gap_dir: Path, runs: dict, seconds: float) -> dict:
    gap = read_gap(gap_dir)
    sigma = auto_noise(gap["statistics"], gap["dim"])
    mean_shift_sigma = auto_noise(gap["statistics"], gap["dim"], gap.get("adapters", {}).get("mean-shift"))
    results = {task: {name: _summary(r) for name, r in variants.items()} for task, variants in runs.items()}
    return {"format": REPORT_FORMAT, "version": 1,
            "settings": {**json.loads(json.dumps(asdict(spec), default=str)), "world": str(world)},
            "world": json.loads((world / "world.json").read_text())["splits"],
            "noise": {"sigma": round(sigma, 4), "dim": gap["dim"],
                      "cos_noisy_clean": round(expected_cosine(sigma, gap["dim"]), 4),
                      "cos_image_caption": round(gap["statistics"]["cos_image_caption"], 4),
                      "mean_shift_sigma": round(mean_shift_sigma, 4)},
            "results": results, "checks": target_checks(results, spec.voice),
            "seconds": round(seconds, 1)}


def target_checks(results: dict, voice: str) -> list[dict]:
    """The plan's checks whose variants ran, each with its measured value, the bar, and pass/fail."""
    checks = []
    for check in PLAN["checks"]:
        values = {side: _check_values(results, check["task"], check.get(side, []), voice) for side in ("a", "b")}
        if None in values["a"] or None in values["b"]:
            continue  # a variant of this check did not run
        value = _check_value(check["kind"], max(values["a"]), max(values["b"], default=0.0))
        checks.append({"target": check["target"].format(voice=voice), "value": value, "bar": check["bar"],
                       "pass": value >= check["bar"]})
    return checks


def _check_value(kind: str, a: float, b: float) -> float:
    if kind == "value":
        return round(a, 4)
    if kind == "ratio":
        return round(a / b, 4) if b else 0.0
    return round(100 * (a - b), 2)  # "points"


def _check_values(results: dict, task: str, refs: list[str], voice: str) -> list[float | None]:
    """Mean of each ``[task:]variant.metric`` (None when that variant did not run; 0 when it has no
    such metric)."""
    values = []
    for ref in refs:
        ref_task, _, ref = ref.format(voice=voice).rpartition(":")
        variant, _, metric = ref.rpartition(".")
        scores = results.get(ref_task or task, {}).get(variant)
        values.append(None if scores is None else scores.get(metric, {}).get("mean", 0.0))
    return values


def report_table(report: dict):
    """A Rich table: one row per task and variant, one column per metric (mean ± std over seeds)."""
    from rich.table import Table

    seeds = len(report["settings"]["seeds"])
    table = Table(title=f"held-out test images, {report['settings']['steps']} steps, {seeds} seed(s); "
                        f"σ {report['noise']['sigma']} (cos(noisy, clean) ≈ {report['noise']['cos_noisy_clean']})")
    table.add_column("task")
    table.add_column("variant")
    for header in METRICS.values():
        table.add_column(header, justify="right")
    for task, variants in report["results"].items():
        for name, scores in variants.items():
            table.add_row(task, name, *(_cell(scores.get(metric), seeds) for metric in METRICS))
    return table


def _cell(summary: dict | None, seeds: int) -> str:
    if not summary:
        return "–"
    return f"{summary['mean']:.3f}" + (f" ± {summary['std']:.3f}" if seeds > 1 else "")


def checks_table(report: dict):
    from rich.table import Table

    table = Table(title="targets")
    for column in ("target", "value", "bar", "pass"):
        table.add_column(column)
    for check in report["checks"]:
        table.add_row(check["target"], f"{check['value']:.3f}", f"{check['bar']}",
                      "[green]pass[/]" if check["pass"] else "[red]miss[/]")
    return table


def write_gallery(path: Path, examples, captions: dict[str, dict[str, str]], out: Path) -> Path:
    """An HTML page: each test image (relative path) with every variant's caption."""
    cards = []
    for ex in examples:
        src = html.escape(os.path.relpath(ex.image, out))
        rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{html.escape(texts.get(ex.id, ''))}</td></tr>"
                       for name, texts in captions.items())
        cards.append(f'<figure><img src="{src}" width="128" height="128"><table>{rows}</table></figure>')
    path.write_text("<!doctype html><meta charset='utf-8'><title>stylecap demo</title><style>"
                    "body{font-family:sans-serif}figure{display:inline-block;vertical-align:top;width:420px;"
                    "margin:8px}img{image-rendering:pixelated}th{text-align:left;padding-right:8px}"
                    "td,th{font-size:13px}</style><h1>stylecap demo: held-out test images</h1>"
                    + "".join(cards) + "\n")
    return path
