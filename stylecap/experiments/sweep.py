"""The paper's sensitivity analysis for any encoder: train the same text-only captioner at several σ
and with each gap adapter, caption held-out images, and tabulate CIDEr-D.

A sweep folder holds ``gap/`` (the gap fitted on ``--pairs``), ``train_pairs.json`` (the training
pairs in Karpathy format, which every setting trains from: on their captions, or on their images for
the image-trained reference), one ``runs/<setting>-<key>/`` per setting (a training run of the shared
variant runner, keyed by everything that made it, plus its ``result-<test key>.json``), ``sweep.json``
and ``sweep.md``. A rerun reuses finished settings and results only when nothing that made them changed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from stylecap.core.encoders import load_clip
from stylecap.core.model import read_model_meta
from stylecap.core.tasks import Example, ReadOptions
from stylecap.core.vectors import all_image_vectors
from stylecap.errors import UsageError
from stylecap.experiments.variants import Budget, Variant, caption_vectors, coco_scores, train_variant
from stylecap.paths import file_digest, text_digest
from stylecap.workflows.gap_analysis import Pairs, PairSource, fit_gap, read_pairs

IMAGE_TRAINED = "image-trained"


@dataclass
class SweepSpec:
    clip: str
    lm: str
    train: Path  # training pairs (captions for text-only settings, images for the image-trained one)
    test: Path  # held-out pairs to caption and score
    pairs: Path | None = None  # pairs to fit the gap on
    images: Path | None = None
    train_split: str | None = "train"
    test_split: str | None = "test"
    pairs_split: str | None = "pairs"
    sigmas: list = field(default_factory=lambda: [0.0, "auto"])  # σ for the plain noise adapter
    adapters: list[str] = field(default_factory=list)  # fitted adapters, each at ``adapter_noise``
    adapter_noise: float | str = "auto"
    image_trained: bool = False
    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    lora: bool = True  # False: train every LM weight (tiny LMs that start from random weights)
    max_target_len: int | None = None
    num_beams: int = 1
    test_limit: int | None = None
    seed: int = 0
    progress: bool = True

    def budget(self) -> Budget:
        return Budget(clip=self.clip, lm=self.lm, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                      seed=self.seed, lora=self.lora, max_target_len=self.max_target_len, progress=self.progress)


def sweep_variants(spec: SweepSpec) -> list[Variant]:
    variants = [Variant(f"noise-{sigma}", "text", sigma, "noise") for sigma in spec.sigmas]
    variants += [Variant(f"{kind}-{spec.adapter_noise}", "text", spec.adapter_noise, kind)
                 for kind in spec.adapters if kind != "noise"]
    if spec.image_trained:
        variants.append(Variant(IMAGE_TRAINED, "images", 0.0, "noise"))
    if any(v.needs_gap for v in variants) and spec.pairs is None:
        raise UsageError("fitted adapters and σ 'auto' need pairs to fit the gap on", "--pairs",
                         "add --pairs FILE (e.g. the world's dataset_coco.json with --pairs-split pairs)")
    if not variants:
        raise UsageError("nothing to sweep", "--sigmas / --adapters", "give at least one σ or adapter")
    return variants


def run_sweep(spec: SweepSpec, out: Path) -> list[dict]:
    """Train and score every setting (reusing finished ones); writes sweep.json and sweep.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    variants = sweep_variants(spec)
    encoder = load_clip(spec.clip)
    gap_dir = _fit_gap_once(spec, out) if spec.pairs is not None else None
    train = _write_training_pairs(read_pairs(spec.train, spec.images, spec.train_split), out / "train_pairs.json")
    test_pairs = read_pairs(spec.test, spec.images, spec.test_split, spec.test_limit)
    test_vecs = all_image_vectors(encoder, test_pairs.images, "the test pairs", spec.progress)
    examples = [Example(target=refs[0], refs=refs) for refs in _refs_per_image(test_pairs)]
    test_key = text_digest([file_digest(Path(spec.test)), str(spec.test_split), str(spec.test_limit),
                            str(spec.num_beams)])[:12]
    rows = []
    for variant in variants:
        model_dir = train_variant("caption", variant, train, ReadOptions(split="train"), spec.budget(), gap_dir,
                                  out / "runs")
        result_path = model_dir.parent / f"result-{test_key}.json"
        if not result_path.exists():
            captions = caption_vectors(model_dir, test_vecs, examples, spec.num_beams, spec.progress)
            result = {"setting": variant.name, "adapter": variant.adapter, "noise_option": variant.noise,
                      **_score(model_dir, captions, examples)}
            result_path.write_text(json.dumps(result, indent=2))
        rows.append(json.loads(result_path.read_text()))
    (out / "sweep.json").write_text(json.dumps({"spec": _jsonable(spec), "results": rows}, indent=2))
    (out / "sweep.md").write_text(format_table(rows) + "\n")
    return rows


def _jsonable(spec: SweepSpec) -> dict:
    return json.loads(json.dumps(vars(spec), default=str))


def _fit_gap_once(spec: SweepSpec, out: Path) -> Path:
    """The gap on ``--pairs``, refitted when the CLIP or the pairs file changed."""
    gap_dir = out / "gap"
    if (gap_dir / "gap.json").exists():
        fitted = json.loads((gap_dir / "gap.json").read_text())
        if fitted.get("clip_identity") == load_clip(spec.clip).identity \
                and fitted["pairs"].get("digest") == file_digest(Path(spec.pairs)) \
                and fitted["pairs"].get("split") == spec.pairs_split:
            return gap_dir
    fit_gap(PairSource(spec.clip, spec.pairs, spec.images, spec.pairs_split, progress=spec.progress), gap_dir)
    return gap_dir


def _write_training_pairs(pairs: Pairs, path: Path) -> Path:
    """The training pairs as a Karpathy-format file (absolute image paths), rewritten only when they
    changed, so every setting trains from one file through the captioning reader."""
    captions: list[list[str]] = [[] for _ in pairs.images]
    for image, caption in zip(pairs.image_of, pairs.captions, strict=True):
        captions[image].append(caption)
    images = [{"filepath": "", "filename": str(Path(image).resolve()), "split": "train", "cocoid": i,
               "sentences": [{"raw": text} for text in texts]}
              for i, (image, texts) in enumerate(zip(pairs.images, captions, strict=True))]
    text = json.dumps({"images": images}, ensure_ascii=False)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _refs_per_image(pairs: Pairs) -> list[list[str]]:
    refs: list[list[str]] = [[] for _ in pairs.images]
    for image, caption in zip(pairs.image_of, pairs.captions, strict=True):
        refs[image].append(caption)
    return refs


def _score(model_dir: Path, captions: list[str], examples: list[Example]) -> dict:
    """Scores as fractions, like every report of stylecap (tables print them as they are)."""
    scores = coco_scores(dict(enumerate(captions)), {i: ex.refs for i, ex in enumerate(examples)})
    noise = read_model_meta(model_dir)["config"]["noise"]
    return {"cider": round(scores["cider"], 4), "bleu4": round(scores["bleu4"], 4), "noise": noise,
            "images": len(captions), "examples": captions[:5], "model": str(model_dir)}


def format_table(rows: list[dict]) -> str:
    """A Markdown table: setting, σ used, held-out CIDEr-D."""
    lines = ["| setting | adapter | σ | CIDEr-D |", "|---|---|---|---|"]
    for row in rows:
        sigma = f"{row['noise']:.4f}" + (" (auto)" if row["noise_option"] == "auto" else "")
        lines.append(f"| {row['setting']} | {row['adapter']} | {sigma} | {row['cider']:.3f} |")
    return "\n".join(lines)
