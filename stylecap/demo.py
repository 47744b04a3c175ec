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

from stylecap.errors import UsageError

CAPTION_VARIANTS = {  # name → (training input, noise option, gap adapter); "auto": σ from the fitted gap
    "no-noise": ("text", 0.0, "noise"),
    "noise": ("text", "auto", "noise"),
    "mean-shift": ("text", "auto", "mean-shift"),
    "image-trained": ("images", 0.0, "noise"),
}
# The quality bench adds the paper's σ sensitivity around the automatic σ and the other fitted adapters.
SWEEP_VARIANTS = {
    "noise-0.06": ("text", 0.06, "noise"),
    "noise-0.2": ("text", 0.2, "noise"),
    "linear": ("text", "auto", "linear"),
    "covariance": ("text", "auto", "covariance"),
}
# Question answering and entailment, scored by the world's exact answers on held-out images. Noise
# None is the task's paper default (VQA 0.04, VE 0.08) rescaled to the CLIP's width; "linear" is
# the fitted linear adapter with the σ its shift leaves, as for captions.
ANSWER_VARIANTS = {"no-noise": ("text", 0.0, "noise"), "noise": ("text", None, "noise"),
                   "linear": ("text", "auto", "linear"), "image-trained": ("images", 0.0, "noise")}
ANSWER_DATA = {  # task → world folders: (text-only training, image-trained training, test)
    "vqa": ("vqa", "vqa", "vqa"),  # text-only training reads the images' captions in place of the images
    "ve": ("snli", "snli_ve", "snli_ve"),  # SNLI premises (captions) → SNLI-VE premise images
}
TASKS = ("caption", "vqa", "ve", "style")
METRICS = {"cider": "CIDEr-D", "bleu4": "BLEU-4", "object_f1": "obj F1", "exact_match": "exact",
           "relation_accuracy": "rel acc", "in_voice": "voice", "accuracy": "acc"}  # report key → table header
REPORT_FORMAT = "stylecap-demo"


@dataclass
class DemoSpec:
    out: Path
    world: Path | None = None  # default: <out>/world, built when missing
    world_size: str = "small"
    # the demo's own world: no clip split (the CLIP ships), enough training images to learn from
    world_splits: dict | None = field(default_factory=lambda: {"clip": 0, "train": 2000, "pairs": 300,
                                                               "val": 0, "test": 100})
    world_seed: int = 0
    clip: str = "world"
    lm: str = "tiny-t5"
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    seeds: list[int] = field(default_factory=lambda: [0])
    voice: str = "egocentric"
    tasks: list[str] = field(default_factory=lambda: ["caption", "style"])
    sweep: bool = False  # also train SWEEP_VARIANTS
    test_limit: int | None = None
    gallery_size: int = 24
    progress: bool = True


def quality_spec(out: Path, **overrides) -> DemoSpec:
    """The quality bench: a default-size world, full step budgets, two seeds."""
    return DemoSpec(**{"out": out, "world_size": "default", "world_splits": None, "steps": 3000, "batch_size": 64,
                       "seeds": [0, 1], "gallery_size": 48, "tasks": list(TASKS), "sweep": True, **overrides})


def run_demo(spec: DemoSpec) -> dict:
    """Train, caption and score every variant for every seed; writes ``report.json`` and
    ``gallery.html`` into ``spec.out`` and returns the report."""
    from stylecap.world import load_scenes

    if not spec.seeds or spec.steps < 1:
        raise UsageError("the demo needs at least one seed and one step", "--seeds / --steps")
    if "caption" not in spec.tasks or set(spec.tasks) - set(TASKS):
        raise UsageError(f"bad task list {','.join(spec.tasks)}", "--tasks",
                         f"choose from {', '.join(TASKS)}; caption is always needed (the other tasks compare to it)")
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
        for task, variant, model_dir in _train_all(spec, world, gap_dir, seed, _runs_folder(spec, out, seed)):
            if task in ANSWER_DATA:
                runs[task].setdefault(variant, []).append(_answer_scores(spec, model_dir, world / ANSWER_DATA[task][2]))
                continue
            texts = _caption(model_dir, vectors, test, spec.progress)
            runs[task].setdefault(variant, []).append(_score(texts, refs, scenes, spec.voice if task == "style" else None))
            captions.setdefault(variant, texts)
    report = _report(spec, world, gap_dir, runs, time.time() - start)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_gallery(out / "gallery.html", test[: spec.gallery_size], captions, out)
    return report


def _runs_folder(spec: DemoSpec, out: Path, seed: int) -> Path:
    """Where one seed's models go: keyed by what shapes them (the CLIP by its weights, so a new
    shipped CLIP is not paired with models trained on the old one), so a rerun with other settings
    trains afresh instead of reusing models it did not ask for."""
    from stylecap.encoders import resolve_clip
    from stylecap.paths import text_digest

    key = text_digest([resolve_clip(spec.clip).identity, spec.lm, str(spec.steps), str(spec.batch_size),
                       str(spec.lr), spec.voice])
    return out / "runs" / f"{key}-seed-{seed}"


def _ensure_world(spec: DemoSpec) -> Path:
    """The user's world, or the demo's own; built when missing (the demo's own also when an older
    stylecap wrote it)."""
    from stylecap.world import build_world
    from stylecap.world.build import VERSION

    world = Path(spec.world or Path(spec.out) / "world")
    info = json.loads((world / "world.json").read_text()) if (world / "world.json").exists() else {}
    # the demo's own world follows the code; a world the user names is used as it is
    if not info or (not spec.world and info.get("version") != VERSION):
        build_world(world, seed=spec.world_seed, size=spec.world_size, splits=spec.world_splits, force=True,
                    progress=spec.progress)
    return world


def _fit_gap(spec: DemoSpec, world: Path, gap_dir: Path) -> Path:
    """The gap on the world's pairs split (fitted once per demo folder and CLIP)."""
    from stylecap.encoders import resolve_clip
    from stylecap.gap import read_gap
    from stylecap.gap_analysis import PairSource, fit_gap

    if (gap_dir / "gap.json").exists():
        fitted = read_gap(gap_dir)
        if fitted.get("clip_identity") == resolve_clip(spec.clip).identity \
                and fitted["pairs"]["file"] == str((world / "dataset_coco.json").resolve()):
            return gap_dir
    fit_gap(PairSource(spec.clip, world / "dataset_coco.json", world / "images", "pairs", progress=spec.progress),
            gap_dir)
    return gap_dir


def _test_images(spec: DemoSpec, world: Path):
    from stylecap.encoders import load_clip
    from stylecap.evaluate import image_vectors, one_per_item
    from stylecap.tasks import Examples, ReadOptions, get_task

    examples = one_per_item(get_task("caption").read(world / "dataset_coco.json", ReadOptions(split="test")))
    if spec.test_limit:
        examples = Examples(examples[: spec.test_limit], examples.skipped)
    return image_vectors(load_clip(spec.clip), examples, str(world), progress=spec.progress)


def _train_all(spec: DemoSpec, world: Path, gap_dir: Path, seed: int, folder: Path):
    """(task, variant, model folder) for each caption variant and the style model; finished models
    are reused, so an interrupted demo resumes."""
    from stylecap.pipeline import ModelChoices, train_task
    from stylecap.tasks import ReadOptions
    from stylecap.train import TrainOptions

    # The world's LM starts from random weights: there is nothing for LoRA to preserve, so train it all.
    # The longest three-object captions run to ~34 tiny-t5 tokens: just over the task's default 32.
    base = ModelChoices(clip=spec.clip, lm=spec.lm, lora=False, max_target_len=40)
    jobs = [("caption", name, world / "dataset_coco.json", inp, noise, adapter, ReadOptions(split="train"))
            for name, (inp, noise, adapter) in _caption_variants(spec).items()]
    for task in (t for t in spec.tasks if t in ANSWER_DATA):
        text_data, image_data, _ = ANSWER_DATA[task]
        jobs += [(task, name, world / (image_data if inp == "images" else text_data), inp, noise, adapter,
                  ReadOptions(split="train")) for name, (inp, noise, adapter) in ANSWER_VARIANTS.items()]
    if "style" in spec.tasks:
        jobs.append(("style", spec.voice, world / "styles" / f"{spec.voice}.jsonl", "text", "auto", "noise", None))
    for task, name, data, inp, noise, adapter, read in jobs:
        run = folder / f"{task}-{name}"
        if (run / "model" / "stylecap.json").exists():
            yield task, name, run / "model"
            continue
        choices = ModelChoices(**{**asdict(base), "noise": noise, "adapter": adapter,
                                  "max_target_len": None if task in ANSWER_DATA else base.max_target_len,
                                  "gap": gap_dir if noise == "auto" or adapter != "noise" else None})
        options = TrainOptions(out_dir=run, steps=spec.steps, batch_size=spec.batch_size, lr=spec.lr, seed=seed,
                               checkpoint_every=10 ** 9, progress=spec.progress)
        yield task, name, train_task(task, data, choices, options, read, input=inp)


def _caption_variants(spec: DemoSpec) -> dict:
    return {**CAPTION_VARIANTS, **(SWEEP_VARIANTS if spec.sweep else {})}


def _caption(model_dir: Path, vectors, examples, progress: bool) -> dict[str, str]:
    from stylecap.encoders import default_device
    from stylecap.evaluate import predict
    from stylecap.model import load_model

    model = load_model(model_dir, default_device())
    outputs = predict(model, vectors, examples, num_beams=1, progress=progress)
    return {ex.id: text for ex, (text, _) in zip(examples, outputs)}


def _answer_scores(spec: DemoSpec, model_dir: Path, test: Path) -> dict:
    """Accuracy on the held-out test images (VQA: the official accuracy; VE: label accuracy)."""
    from stylecap.evaluate import evaluate

    result = evaluate(model_dir, test, input="images", split="test", out=model_dir.parent / "eval",
                      limit=spec.test_limit, num_beams=1, progress=spec.progress)
    return {"accuracy": result.report["scores"]["accuracy"]}


def _score(captions: dict[str, str], refs: dict[str, list[str]], scenes: dict, voice: str | None) -> dict:
    from stylecap.metrics import caption_scores
    from stylecap.world import score_captions

    coco, _ = caption_scores(captions, {k: refs[k] for k in captions}, meteor=False, spice=False)
    world = score_captions(captions, scenes, voice=voice)
    scores = {"cider": coco["CIDEr-D"], "bleu4": coco["BLEU-4"],
              **{k: world[k] for k in ("object_f1", "exact_match", "relation_accuracy")}}
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
    from stylecap.gap import auto_noise, expected_cosine, read_gap

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
    """The issue's targets for the tasks that ran, each with its measured value, the bar, and pass/fail."""

    def mean(variant: dict, metric: str) -> float:
        return variant.get(metric, {}).get("mean", 0.0)

    def ratio(a: float, b: float) -> float:
        return round(a / b, 4) if b else 0.0

    cap = results["caption"]
    ref, noise, plain = cap["image-trained"], cap["noise"], cap["no-noise"]
    checks = [
        ("image-trained object F1 ≥ 0.8", round(mean(ref, "object_f1"), 4), 0.8),
        ("noise CIDEr-D ≥ 0.9× image-trained", ratio(mean(noise, "cider"), mean(ref, "cider")), 0.9),
        ("noise object F1 ≥ 0.9× image-trained", ratio(mean(noise, "object_f1"), mean(ref, "object_f1")), 0.9),
        ("no-noise CIDEr-D clearly worse (≥ 10% below noise)", ratio(mean(noise, "cider"), mean(plain, "cider")), 1.1),
    ]
    if all(name in cap for name in SWEEP_VARIANTS):  # the gap toolkit's claims (quality bench)
        cider = {name: mean(scores, "cider") for name, scores in cap.items()}
        best_adapter = max(cider[name] for name in ("mean-shift", "linear", "covariance"))
        best_sigma = max(cider[name] for name in ("no-noise", "noise", "noise-0.06", "noise-0.2"))
        checks += [("best fitted adapter CIDEr-D ≥ noise alone", ratio(best_adapter, cider["noise"]), 1.0),
                   ("σ auto within 3 CIDEr-D points of the best swept σ (auto − best)",
                    round(100 * (cider["noise"] - best_sigma), 2), -3.0)]
    for task in (t for t in ANSWER_DATA if t in results):
        accuracy = {variant: mean(scores, "accuracy") for variant, scores in results[task].items()}
        checks += [(f"{task}: {variant} accuracy ≥ 0.9× image-trained",
                    ratio(accuracy[variant], accuracy.get("image-trained", 0.0)), 0.9)
                   for variant in ("noise", "linear") if variant in accuracy]
        checks.append((f"{task}: no-noise accuracy clearly worse (≥ 10% below noise)",
                       ratio(accuracy.get("noise", 0.0), accuracy.get("no-noise", 0.0)), 1.1))
    if "style" in results:
        style = results["style"].get(voice, {})
        checks += [(f"style: ≥ 90% of captions in the {voice} voice", round(mean(style, "in_voice"), 4), 0.9),
                   ("style object F1 within 10% of the neutral (noise) model",
                    ratio(mean(style, "object_f1"), mean(noise, "object_f1")), 0.9)]
    return [{"target": name, "value": value, "bar": bar, "pass": value >= bar} for name, value, bar in checks]


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
