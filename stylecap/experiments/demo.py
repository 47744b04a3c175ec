"""`stylecap demo` and `stylecap bench quality`: CLOSE end to end on the synthetic world.

One run builds (or reuses) a world, fits the modality gap on its ``pairs`` split, trains text-only
captioners (no noise; noise at the σ the gap implies; mean shift + that noise), an image-trained
reference and a style-voice captioner on the same step budget, captions the held-out ``test``
images and scores them: coco-caption's CIDEr-D and BLEU-4 against the world's references, and
the world's exact object F1, scene match and relation accuracy against the known scenes.

The demo and the quality bench are the same code: the bench uses a default-size world, longer
training and several seeds, adds visual question answering, entailment and news, the best lever of
each transfer regime (no images: the memory levers; unpaired images: adapters fitted without pairs;
a few pairs: the linear adapter), the curve of how many images or pairs an adapter needs, and all
four style voices with and without the no-image lever, and checks the targets.
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
from stylecap.core.gap import PAIRED_KINDS, UNPAIRED_KINDS, auto_noise, expected_cosine, read_gap
from stylecap.core.tasks import Examples, ReadOptions, get_task
from stylecap.core.vectors import image_vectors
from stylecap.errors import InputError, UsageError, first_line
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
from stylecap.workflows.defaults import remember_model
from stylecap.workflows.evaluate import evaluate, one_per_item
from stylecap.workflows.gap_analysis import PairSource, UnpairedSource, fit_gap, fit_unpaired_gap
from stylecap.world import build_world, load_scenes, score_captions, vocab
from stylecap.world.build import VERSION as WORLD_VERSION

PLAN = plan()
CAPTION_VARIANTS = plan_variants("caption")
SWEEP_VARIANTS = plan_variants("sweep")
LEVER_VARIANTS = plan_variants("levers")
ANSWER_VARIANTS = plan_variants("answer")
ANSWER_LEVERS = plan_variants("answer_levers")
ANSWER_DATA = {task: tuple(folders) for task, folders in PLAN["answer_data"].items()}
RERANK = PLAN["rerank"]  # caption variants the bench also scores with test-time CLIP reranking
RERANKED = "+rerank"  # the suffix of their rows
TASKS = ("caption", "vqa", "ve", "news", "style")
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
    voices: list[str] | None = None  # style voices to train (default: [voice]); the bench trains all four
    tasks: list[str] = field(default_factory=lambda: list(_DEMO["tasks"]))
    sweep: bool = False  # also train the sweep variants
    levers: bool = False  # also train the best lever of each transfer regime, and the style voices with theirs
    curve: bool = False  # also train the images curve of the unpaired and paired adapters
    test_limit: int | None = None
    gallery_size: int = _DEMO["gallery_size"]
    progress: bool = True

    @property
    def style_voices(self) -> list[str]:
        return list(self.voices or [self.voice])

    def __post_init__(self):
        if not self.seeds or self.steps < 1:
            raise UsageError("the demo needs at least one seed and one step", "--seeds / --steps")
        unknown = [v for v in self.style_voices if v not in vocab()["voices"]]
        if unknown:
            raise UsageError(f"unknown style voice {unknown[0]!r}", "--voice",
                             f"choose one of: {', '.join(vocab()['voices'])}")
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
    models: dict[str, Path] = {}  # caption variant → its model folder (first seed)
    for seed in spec.seeds:
        for task, variant, model_dir in _train_all(spec, world, gap_dir, seed, out / "runs"):
            if task in ANSWER_DATA:
                runs[task].setdefault(variant, []).append(_task_scores(spec, model_dir, world / ANSWER_DATA[task][2]))
                continue
            texts = _captions_of(spec, model_dir, vectors, test)
            voice = _voice_of(variant, spec) if task == "style" else None
            runs[task].setdefault(variant, []).append(_score(texts, refs, scenes, voice))
            if task == "caption" and spec.levers and variant in RERANK["variants"]:
                reranked = _captions_of(spec, model_dir, vectors, test, RERANK["samples"])
                runs[task].setdefault(f"{variant}{RERANKED}", []).append(_score(reranked, refs, scenes, None))
            captions.setdefault(variant, texts)
            if task == "caption":
                models.setdefault(variant, model_dir)
    report = _report(spec, world, gap_dir, runs, time.time() - start)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    write_gallery(out / "gallery.html", test[: spec.gallery_size], captions, out)
    _remember_captioner(report, models)
    if report.get("curve"):
        plot_curve(report["curve"], out / "curve.png")
    return report


def _captions_of(spec: DemoSpec, model_dir: Path, vectors, test, rerank: int = 0) -> dict[str, str]:
    """Image id → the model's caption of it: greedy, or the best of ``rerank`` samples by the CLIP."""
    texts = caption_vectors(model_dir, vectors, test, progress=spec.progress, rerank=rerank, encoder=load_clip(spec.clip))
    return dict(zip((ex.id for ex in test), texts, strict=True))


def _remember_captioner(report: dict, models: dict[str, Path]) -> None:
    """Record the best text-only captioner of the run (by CIDEr-D) as this machine's latest model,
    so `stylecap caption PHOTOS` without --model uses it."""
    text_only = {name: scores["cider"]["mean"] for name, scores in report["results"]["caption"].items()
                 if name in models and REGIMES.get(name, "reference") != "reference" and "cider" in scores}
    if text_only:
        remember_model(models[max(text_only, key=text_only.get)], "stylecap demo")


def _ensure_world(spec: DemoSpec) -> Path:
    """The user's world, or the demo's own; built when missing (the demo's own also when an older
    stylecap wrote it)."""
    world = Path(spec.world or Path(spec.out) / "world")
    info = _world_info(world)
    # the demo's own world follows the code; a world the user names is used as it is
    if not info or (not spec.world and info.get("version") != WORLD_VERSION):
        build_world(world, seed=spec.world_seed, size=spec.world_size, splits=spec.world_splits, force=True,
                    progress=spec.progress)
    return world


def _world_info(world: Path) -> dict:
    """A world's world.json ({} when there is none yet); a damaged one is one line naming it."""
    path = world / "world.json"
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise InputError(f"the world's description cannot be read: {first_line(exc, 120)}", str(path),
                         "rebuild the world with `stylecap world build --out DIR --force`") from None
    if not isinstance(info, dict):
        raise InputError("the world's description is not a JSON object", str(path),
                         "rebuild the world with `stylecap world build --out DIR --force`")
    return info


def _fit_gap(spec: DemoSpec, world: Path, gap_dir: Path, source: str = "pairs", images: int | None = None) -> Path:
    """The gap fitted on the world's pairs split — from its image–caption pairs, or from its images
    alone against the training captions (``source="unpaired"``), from at most ``images`` images —
    once per CLIP, world file and size (refitted when any changes)."""
    data = world / "dataset_coco.json"
    if (gap_dir / "gap.json").exists() and _gap_is_current(read_gap(gap_dir), spec, data):
        return gap_dir  # (a folder is only ever fitted from one source and number of images: its name says which)
    if source == "unpaired":  # the pairs split's images, never its captions; the texts are the training captions
        fit_unpaired_gap(UnpairedSource(spec.clip, world / "images" / "pairs", data, split="train", limit=images,
                                        progress=spec.progress), gap_dir, list(UNPAIRED_KINDS))
    else:
        fit_gap(PairSource(spec.clip, data, world / "images", "pairs", limit=images, progress=spec.progress), gap_dir)
    return gap_dir


def _gap_is_current(fitted: dict, spec: DemoSpec, data: Path) -> bool:
    """Was this gap fitted with this CLIP on this world's file, with every adapter this version fits
    from its source (a folder from an older version may lack one)?"""
    source = fitted.get("pairs") or fitted.get("unpaired", {}).get("texts", {})
    digest = source.get("digest") if fitted.get("pairs") else source.get("file_digest")
    kinds = PAIRED_KINDS if fitted.get("pairs") else UNPAIRED_KINDS
    return (fitted.get("clip_identity") == resolve_clip(spec.clip).identity and digest == file_digest(data)
            and set(kinds) <= set(fitted.get("adapters", {})))


def _gap_for(spec: DemoSpec, world: Path, gap_dir: Path, variant: Variant) -> Path | None:
    """The gap folder a variant trains with: the full pairs fit, or one from fewer or unpaired images."""
    if not variant.needs_gap or (variant.gap == "pairs" and variant.images is None):
        return gap_dir
    folder = gap_dir.with_name(f"gap-{variant.gap}-{variant.images or 'all'}")
    return _fit_gap(spec, world, folder, variant.gap, variant.images)


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
    answer_variants = {**ANSWER_VARIANTS, **(ANSWER_LEVERS if spec.levers else {})}
    for task in (t for t in spec.tasks if t in ANSWER_DATA):
        text_data, image_data, _ = ANSWER_DATA[task]
        jobs += [(task, variant, world / (image_data if variant.input == "images" else text_data), train, answers)
                 for variant in answer_variants.values()]
    if "style" in spec.tasks:
        for voice in spec.style_voices:
            data = world / "styles" / f"{voice}.jsonl"
            jobs.append(("style", Variant(voice, "text", "auto", "noise"), data, None, caption))  # noise at the auto σ
            if spec.levers:  # a styled captioner never has pairs: the no-image lever is its one
                jobs.append(("style", style_lever(voice), data, None, caption))
    for task, variant, data, read, budget in jobs:
        yield task, variant.name, train_variant(task, variant, data, read, budget,
                                                _gap_for(spec, world, gap_dir, variant), root)


def style_lever(voice: str) -> Variant:
    """The style model of ``voice`` with the plan's no-image lever (``[style_lever]``)."""
    lever = dict(PLAN["style_lever"])
    return Variant.from_plan(f"{voice}+{lever.pop('name')}", lever)


def _voice_of(variant: str, spec: DemoSpec) -> str:
    """The voice a style variant speaks in (its name, or its name before "+lever")."""
    return variant.partition("+")[0] if variant.partition("+")[0] in spec.style_voices else spec.voice


def curve_variants() -> dict[str, Variant]:
    """The images curve (``[curve]`` in the plan): the unpaired and the paired adapter fitted from
    each number of images, with the σ its shift leaves."""
    curve = PLAN["curve"]
    variants = {}
    for source, regime in (("unpaired", "unpaired images"), ("pairs", "pairs")):
        for images in curve["images"]:
            name = f"{source}-{curve[source]}-{images}"
            variants[name] = Variant(name, "text", "auto", curve[source], gap=source, images=images, regime=regime)
    return variants


def _caption_variants(spec: DemoSpec) -> list:
    return list({**CAPTION_VARIANTS, **(SWEEP_VARIANTS if spec.sweep else {}),
                 **(LEVER_VARIANTS if spec.levers else {}), **(curve_variants() if spec.curve else {})}.values())


def _task_scores(spec: DemoSpec, model_dir: Path, test: Path) -> dict:
    """Scores on the held-out test images: accuracy (VQA: the official accuracy; VE: label
    accuracy), or CIDEr-D and BLEU-4 for visual news."""
    result = evaluate(model_dir, test, input="images", split="test", out=model_dir.parent / "eval",
                      limit=spec.test_limit, num_beams=1, meteor=False, progress=spec.progress)
    scores = result.report["scores"]
    if result.report["metric"] == "caption":
        return {"cider": scores["CIDEr-D"], "bleu4": scores["BLEU-4"]}
    return {"accuracy": scores["accuracy"]}


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
    regimes = {name: variant.regime for name, variant in {**LEVER_VARIANTS, **ANSWER_LEVERS, **curve_variants()}.items()
               if any(name in variants for variants in results.values())}
    regimes.update({name: regimes.get(base) or REGIMES.get(base, "no images") for name in results.get("caption", {})
                    for base in [name.removesuffix(RERANKED)] if name.endswith(RERANKED)})
    return {"format": REPORT_FORMAT, "version": 1,
            "settings": {**json.loads(json.dumps(asdict(spec), default=str)), "world": str(world)},
            "world": json.loads((world / "world.json").read_text())["splits"],
            "noise": {"sigma": round(sigma, 4), "dim": gap["dim"],
                      "cos_noisy_clean": round(expected_cosine(sigma, gap["dim"]), 4),
                      "cos_image_caption": round(gap["statistics"]["cos_image_caption"], 4),
                      "mean_shift_sigma": round(mean_shift_sigma, 4)},
            "results": results, "regimes": regimes, "checks": target_checks(results, spec.style_voices),
            **({"curve": images_curve(results["caption"])} if spec.curve else {}),
            "seconds": round(seconds, 1)}


def images_curve(caption: dict) -> dict:
    """Per source (unpaired, pairs): images → mean CIDEr-D and object F1, and the same ÷ the
    image-trained reference."""
    reference = caption.get("image-trained", {})
    curve = {"images": list(PLAN["curve"]["images"])}
    for name, variant in curve_variants().items():
        scores = caption.get(name)
        if not scores:
            continue
        point = {"images": variant.images}
        for metric in ("cider", "object_f1"):
            point[metric] = scores[metric]["mean"]
            if reference.get(metric, {}).get("mean"):
                point[f"{metric}_ratio"] = round(scores[metric]["mean"] / reference[metric]["mean"], 4)
        curve.setdefault(variant.gap, []).append(point)
    return curve


def plot_curve(curve: dict, path: Path) -> Path:
    """CIDEr-D and object F1 ÷ the image-trained reference against the number of images, per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric, title in zip(axes, ("cider_ratio", "object_f1_ratio"), ("CIDEr-D", "object F1"), strict=True):
        for source, label in (("unpaired", "unpaired images"), ("pairs", "pairs")):
            points = [p for p in curve.get(source, []) if metric in p]
            ax.plot([p["images"] for p in points], [p[metric] for p in points], marker="o", label=label)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set(xscale="log", xlabel="images used to fit the adapter", ylabel=f"{title} ÷ image-trained", title=title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def target_checks(results: dict, voices: str | list[str]) -> list[dict]:
    """The plan's checks whose variants ran, each with its measured value, the bar, and pass/fail;
    a check naming "{voice}" is made once per style voice."""
    voices = [voices] if isinstance(voices, str) else list(voices)
    checks = []
    for check in PLAN["checks"]:
        for voice in voices if "{voice}" in json.dumps(check) else voices[:1]:
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


# The demo's result tables: one per kind of result, each with only the columns its results have, so
# every name and number fits an 80-column terminal or log file uncut. (task, report metric, header)
RESULT_TABLES = (
    ("captioning", (("caption", "cider", "CIDEr-D"), ("caption", "bleu4", "BLEU-4"), ("caption", "object_f1", "obj F1"),
                    ("caption", "exact_match", "exact\nscene"), ("caption", "relation_accuracy", "relation\naccuracy"))),
    ("style voices", (("style", "in_voice", "in\nvoice"), ("style", "object_f1", "obj F1"),
                      ("style", "exact_match", "exact\nscene"), ("style", "cider", "CIDEr-D"))),
    ("questions, entailment, news", (("vqa", "accuracy", "VQA\naccuracy"), ("ve", "accuracy", "entailment\naccuracy"),
                                     ("news", "cider", "news\nCIDEr-D"), ("news", "bleu4", "news\nBLEU-4"))),
)
# What each base variant needs from the user (lever variants carry theirs in the report's "regimes").
REGIMES = {"no-noise": "no images", "noise": "no images", "noise-0.06": "no images", "noise-0.2": "no images",
           "mean-shift": "unpaired images", "linear": "pairs", "covariance": "pairs", "image-trained": "reference"}
REGIME_ORDER = ("no images", "unpaired images", "pairs", "reference")


def report_table(report: dict):
    """The results, one table per kind (captioning, style voices, questions/entailment/news): a row
    per variant grouped by what it needs (no images, unpaired images, pairs, the image-trained
    reference), a column per metric; mean over seeds, with ± std below it when there are several."""
    from rich.console import Group

    seeds = len(report["settings"]["seeds"])
    title = (f"held-out test images · {report['settings']['steps']} steps · {seeds} seed{'s' * (seeds > 1)} · "
             f"σ {report['noise']['sigma']} (cos(noisy, clean) ≈ {report['noise']['cos_noisy_clean']})")
    tables = [table for name, columns in RESULT_TABLES
              if (table := _result_table(report, name, columns, seeds)) is not None]
    return Group(title, *tables)


def _result_table(report: dict, name: str, columns: tuple, seeds: int):
    from rich import box
    from rich.table import Table

    results = report["results"]
    columns = [c for c in columns if any(c[1] in scores for scores in results.get(c[0], {}).values())]
    variants = list(dict.fromkeys(v for task, _, _ in columns for v in results.get(task, {})))
    if not columns:
        return None
    table = Table(title=name, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("variant", overflow="fold")
    for _, _, header in columns:
        table.add_column(header, justify="right", no_wrap=True)
    by_regime = sorted(variants, key=lambda v: _regime_rank(_regime(v, report)))
    for i, variant in enumerate(by_regime):
        regime = _regime(variant, report)
        if len({_regime(v, report) for v in variants}) > 1 and (i == 0 or _regime(by_regime[i - 1], report) != regime):
            table.add_row(f"[dim italic]{regime}[/]", *([""] * len(columns)))
        table.add_row(variant, *(_cell(results.get(task, {}).get(variant, {}).get(metric), seeds)
                                 for task, metric, _ in columns))
    return table


def _regime(variant: str, report: dict) -> str:
    """What a variant needs: the report's regime for a lever, the plan's for a base variant; style
    models and anything else trained on text alone need no images."""
    return report.get("regimes", {}).get(variant) or REGIMES.get(variant) or "no images"


def _regime_rank(regime: str) -> int:
    return REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER)


def _cell(summary: dict | None, seeds: int) -> str:
    if not summary:
        return "–"
    return f"{summary['mean']:.3f}" + (f"\n±{summary['std']:.3f}" if seeds > 1 else "")


def checks_table(report: dict):
    """The claims, ours beside the paper's: pass or miss against the bar; a bar the project no longer
    claims (``informational`` in the plan: an earlier plan's, above what the paper itself reports),
    or one that holds only at a longer budget than this run's (``min_steps``), is shown for
    information, not as a miss. The values are the report's, unchanged."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="claims (bars: benchmarks/plan.toml)", box=box.SIMPLE_HEAD, title_justify="left",
                  pad_edge=False)
    table.add_column("claim", overflow="fold", ratio=1)
    for column in ("ours", "paper"):  # the bar is in the claim's own words
        table.add_column(column, justify="right", overflow="fold")
    table.add_column("", no_wrap=True)
    plans = _plan_checks(report)
    for check in report["checks"]:
        plan = plans.get(check["target"], {})
        informational = plan.get("informational", False) or report["settings"]["steps"] < plan.get("min_steps", 0)
        status = "[dim]info[/]" if informational else "[green]pass[/]" if check["pass"] else "[red]miss[/]"
        table.add_row(escape(check["target"]), _amount(check["value"], plan.get("kind")), plan.get("paper", "–"), status)
    return table


def _plan_checks(report: dict) -> dict[str, dict]:
    """The plan's entry of each check, by its target as the report spells it (voices filled in)."""
    voices = report["settings"].get("voices") or [report["settings"].get("voice", "egocentric")]
    return {check["target"].format(voice=voice): check for check in PLAN["checks"] for voice in voices}


def _amount(value: float, kind: str | None) -> str:
    if kind == "ratio":
        return f"{value:.2f}×"
    if kind == "points":
        return f"{value:+.1f} pts"
    return f"{value:.2f}"


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
