"""The paper's sensitivity analysis for any encoder: train the same text-only captioner at several σ
and with each gap adapter, caption held-out images, and tabulate CIDEr-D.

A sweep folder holds ``gap/`` (the gap fitted on ``--pairs``), ``train_captions.txt``, one
``runs/<setting>/`` per setting (a normal training run plus ``result.json``), ``sweep.json`` and
``sweep.md``. Finished settings are skipped when the same sweep is run again, so a sweep resumes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from stylecap.errors import UsageError
from stylecap.evaluate import all_image_vectors
from stylecap.gap_analysis import PairSource, Pairs, fit_gap, read_pairs

IMAGE_TRAINED = "image-trained"


@dataclass
class SweepSpec:
    clip: str
    lm: str
    train: Path  # captions to train on (a pairs file: only the captions are read, plus images if image-trained)
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


@dataclass(frozen=True)
class Setting:
    adapter: str  # an adapter kind, or IMAGE_TRAINED
    noise: float | str

    @property
    def name(self) -> str:
        return self.adapter if self.adapter == IMAGE_TRAINED else f"{self.adapter}-{self.noise}"


def sweep_settings(spec: SweepSpec) -> list[Setting]:
    settings = [Setting("noise", sigma) for sigma in spec.sigmas]
    settings += [Setting(kind, spec.adapter_noise) for kind in spec.adapters if kind != "noise"]
    if spec.image_trained:
        settings.append(Setting(IMAGE_TRAINED, 0.0))
    needs_gap = any(s.noise == "auto" or s.adapter not in ("noise", IMAGE_TRAINED) for s in settings)
    if needs_gap and spec.pairs is None:
        raise UsageError("fitted adapters and σ 'auto' need pairs to fit the gap on", "--pairs",
                         "add --pairs FILE (e.g. the world's dataset_coco.json with --pairs-split pairs)")
    if not settings:
        raise UsageError("nothing to sweep", "--sigmas / --adapters", "give at least one σ or adapter")
    return settings


def run_sweep(spec: SweepSpec, out: Path) -> list[dict]:
    """Train and score every setting (skipping finished ones); writes sweep.json and sweep.md."""
    from stylecap.encoders import load_clip

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = sweep_settings(spec)
    encoder = load_clip(spec.clip)
    gap_dir = _fit_gap_once(spec, out) if spec.pairs is not None else None
    train_pairs = read_pairs(spec.train, spec.images, spec.train_split)
    test_pairs = read_pairs(spec.test, spec.images, spec.test_split, spec.test_limit)
    test_vecs = all_image_vectors(encoder, test_pairs.images, "the test pairs", spec.progress)
    refs = _refs_per_image(test_pairs)
    rows = []
    for setting in settings:
        result_path = out / "runs" / setting.name / "result.json"
        if not result_path.exists():
            model_dir = out / "runs" / setting.name / "model"
            if not (model_dir / "stylecap.json").exists():  # trained before the scoring was interrupted
                model_dir = _train_setting(setting, spec, train_pairs, gap_dir, out, encoder)
            result = {"setting": setting.name, "adapter": setting.adapter, "noise_option": setting.noise,
                      **_score(model_dir, test_vecs, refs, spec.num_beams, spec.progress)}
            result_path.write_text(json.dumps(result, indent=2))
        rows.append(json.loads(result_path.read_text()))
    (out / "sweep.json").write_text(json.dumps({"spec": _jsonable(spec), "results": rows}, indent=2))
    (out / "sweep.md").write_text(format_table(rows) + "\n")
    return rows


def _jsonable(spec: SweepSpec) -> dict:
    return json.loads(json.dumps(vars(spec), default=str))


def _fit_gap_once(spec: SweepSpec, out: Path) -> Path:
    gap_dir = out / "gap"
    if not (gap_dir / "gap.json").exists():
        fit_gap(PairSource(spec.clip, spec.pairs, spec.images, spec.pairs_split, progress=spec.progress), gap_dir)
    return gap_dir


def _train_setting(setting: Setting, spec: SweepSpec, train_pairs: Pairs, gap_dir: Path | None, out: Path,
                   encoder) -> Path:
    from stylecap.pipeline import build_config, train_task
    from stylecap.train import Row, TrainOptions, train

    options = TrainOptions(out_dir=out / "runs" / setting.name, steps=spec.steps, batch_size=spec.batch_size,
                           lr=spec.lr, seed=spec.seed, checkpoint_every=10 ** 9, progress=spec.progress,
                           resume=(out / "runs" / setting.name / "checkpoints").exists())
    if setting.adapter == IMAGE_TRAINED:
        # The reference: the same model trained on image vectors (no noise) instead of text vectors.
        config = build_config("caption", replace(_choices(spec), noise=0.0), encoder.dim)
        config.extra["trained_on"] = "images"
        vectors = all_image_vectors(encoder, train_pairs.images, "the training pairs", spec.progress)
        rows = [Row(vector=i, target=c) for i, c in zip(train_pairs.image_of, train_pairs.captions)]
        return train(vectors, rows, config, options)
    captions = out / "train_captions.txt"
    if not captions.exists():
        captions.write_text("".join(" ".join(c.split()) + "\n" for c in dict.fromkeys(train_pairs.captions)))
    choices = replace(_choices(spec), noise=setting.noise, adapter=setting.adapter,
                      gap=gap_dir if setting.noise == "auto" or setting.adapter != "noise" else None)
    return train_task("caption", captions, choices, options)


def _choices(spec: SweepSpec):
    """The model choices every setting shares."""
    from stylecap.pipeline import ModelChoices

    return ModelChoices(clip=spec.clip, lm=spec.lm, lora=spec.lora, max_target_len=spec.max_target_len)


def _refs_per_image(pairs: Pairs) -> list[list[str]]:
    refs: list[list[str]] = [[] for _ in pairs.images]
    for image, caption in zip(pairs.image_of, pairs.captions):
        refs[image].append(caption)
    return refs


def _score(model_dir: Path, image_vecs: torch.Tensor, refs: list[list[str]], num_beams: int, progress: bool) -> dict:
    from stylecap.encoders import default_device
    from stylecap.evaluate import predict
    from stylecap.metrics import caption_scores
    from stylecap.model import load_model
    from stylecap.tasks import Example

    model = load_model(model_dir, default_device())
    examples = [Example(target=r[0], refs=r) for r in refs]
    captions = [text for text, _ in predict(model, image_vecs, examples, num_beams=num_beams, progress=progress)]
    scores, _ = caption_scores(dict(enumerate(captions)), dict(enumerate(refs)), meteor=False, spice=False)
    return {"cider": round(100 * scores["CIDEr-D"], 2), "bleu4": round(100 * scores["BLEU-4"], 2),
            "noise": model.config.noise, "images": len(captions), "examples": captions[:5], "model": str(model_dir)}


def format_table(rows: list[dict]) -> str:
    """A Markdown table: setting, σ used, held-out CIDEr-D."""
    lines = ["| setting | adapter | σ | CIDEr-D |", "|---|---|---|---|"]
    for row in rows:
        sigma = f"{row['noise']:.4f}" + (" (auto)" if row["noise_option"] == "auto" else "")
        lines.append(f"| {row['setting']} | {row['adapter']} | {sigma} | {row['cider']:.1f} |")
    return "\n".join(lines)
