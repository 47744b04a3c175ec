"""Measuring the modality gap of a CLIP on image–caption pairs: statistics, PCA, plots, and the
``gap fit`` / ``gap analyze`` library functions.

Pairs come from a JSONL file of ``{"image": path, "caption": text}`` records (image paths relative
to ``--images`` or to the file's folder) or a Karpathy-split COCO file (``dataset_coco.json``:
``images[].filepath/filename/split/sentences[].raw``, paths relative to ``--images``).

Without pairs, ``gap fit --images DIR --texts FILE`` fits the adapters that need only the two sets
(mean shift, CORAL) from a folder of images and a text file that are not paired, and estimates the
cosine an image keeps to its caption from each image's nearest text (see :mod:`stylecap.core.gap`).
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from stylecap.core.encoders import load_clip
from stylecap.core.gap import (
    ADAPTERS,
    auto_noise,
    check_paired_kinds,
    check_unpaired_kinds,
    difference_spectrum,
    expected_cosine,
    fit_adapters,
    fit_unpaired,
    nearest_text_cosine,
    save_gap,
)
from stylecap.core.images import Failure, find_images
from stylecap.core.tasks import ReadOptions, get_task
from stylecap.core.tasks.caption import karpathy_images
from stylecap.core.tasks.textfiles import jsonl_records, require_file
from stylecap.core.vectors import all_image_vectors, encode_image_files, encode_texts_cached
from stylecap.errors import InputError, ModelError
from stylecap.paths import file_digest, text_digest


@dataclass
class Pairs:
    """Image–caption pairs: ``images`` are unique paths, ``image_of[i]`` the image of caption ``i``."""

    images: list[Path]
    captions: list[str]
    image_of: list[int]


def read_pairs(path: Path, images: Path | None = None, split: str | None = None, limit: int | None = None) -> Pairs:
    """Pairs from a JSONL or Karpathy JSON file, keeping ``split`` when records name one."""
    path = require_file(Path(path), "pairs file")
    root = Path(images) if images else path.parent
    skipped: Counter = Counter()
    if path.suffix == ".json":  # Karpathy: the captioning task's reader ("train" includes "restval")
        records = ((relative, caption) for _, relative, captions in karpathy_images(path, split, skipped)
                   for caption in captions)
    else:
        records = _jsonl_pairs(path, split, skipped)
    index: dict[str, int] = {}
    captions, image_of = [], []
    for image, caption in records:
        if limit is not None and image not in index and len(index) >= limit:
            continue
        image_of.append(index.setdefault(image, len(index)))
        captions.append(caption)
    if skipped:
        raise InputError("unreadable records: " + ", ".join(f"{n} {what}" for what, n in skipped.items()), str(path),
                         'fix them (JSONL: {"image": "img/1.jpg", "caption": "a dog"} per line)')
    if not captions:
        raise InputError("no image–caption pairs found" + (f" in split '{split}'" if split else ""), str(path),
                         "check the file (and --split)")
    return Pairs([root / image for image in index], captions, image_of)


def _jsonl_pairs(path: Path, split: str | None, skipped: Counter) -> Iterator[tuple[str, str]]:
    for _, record in jsonl_records(path, skipped):
        image, caption = record.get("image"), record.get("caption")
        if not isinstance(image, str) or not isinstance(caption, str) or not caption.strip():
            skipped["records without string 'image' and 'caption'"] += 1
        elif split is None or record.get("split", split) == split:
            yield image, caption.strip()


def encode_pairs(encoder, pairs: Pairs, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(text vectors, image vectors), one row per caption (image vectors repeated per caption)."""
    missing = next((p for p in pairs.images if not p.is_file()), None)
    if missing is not None:
        raise InputError("image not found", str(missing), "point --images at the folder the pairs' paths start from")

    text = encode_texts_cached(encoder, pairs.captions, progress=progress)
    image = all_image_vectors(encoder, pairs.images, "the pairs file", progress)
    return text, image[torch.tensor(pairs.image_of)]


# ----------------------------------------------------------------------------- statistics

def _mean_unrelated_cosine(vecs: torch.Tensor, groups: torch.Tensor) -> float:
    """Mean cosine over all pairs of vectors from different groups, exactly, in O(N·D)."""
    total = float(vecs.sum(0).double().norm() ** 2)
    sums = torch.zeros(int(groups.max()) + 1, vecs.shape[1], dtype=torch.float64).index_add_(0, groups, vecs.double())
    counts = torch.bincount(groups).double()
    within = float((sums.norm(dim=1) ** 2).sum())
    n_pairs = float(len(vecs) ** 2 - (counts ** 2).sum())
    return (total - within) / n_pairs if n_pairs > 0 else float("nan")


def _mean_pairwise_cosine(vecs: torch.Tensor) -> float:
    """Mean cosine over all pairs of distinct rows (normalised vectors), in O(N·D)."""
    n = len(vecs)
    total = float(vecs.double().sum(0).norm() ** 2) - float((vecs.double() ** 2).sum())
    return total / (n * (n - 1)) if n > 1 else float("nan")


def pca_of_differences(text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Explained-variance ratios (descending) of the PCA of the centred image − text differences."""
    values, _ = difference_spectrum(text, image)
    return values / values.sum().clamp(min=1e-12)


def gap_statistics(text: torch.Tensor, image: torch.Tensor, image_of: list[int]) -> dict:
    """The gap in numbers: paired and unrelated cosines, the mean difference, its principal components."""
    groups = torch.tensor(image_of)
    n_images = int(groups.max()) + 1
    row_of_image = torch.empty(n_images, dtype=torch.long)
    row_of_image[groups] = torch.arange(len(groups))  # any row of an image will do: its vector repeats
    images = image[row_of_image]
    paired = (text * image).sum(1)
    ratios = pca_of_differences(text, image)
    cumulative = ratios.cumsum(0)
    dim = text.shape[1]
    return {
        "pairs": len(text), "images": n_images, "dim": dim,
        "cos_image_caption": float(paired.mean()),
        "cos_caption_unrelated_caption": _mean_unrelated_cosine(text, groups),
        "cos_image_unrelated_image": _mean_unrelated_cosine(images, torch.arange(n_images)),
        "cos_image_unrelated_caption": float(text.sum(0) @ images.sum(0) - paired.sum())
        / max(1, len(text) * (n_images - 1)),
        "mean_difference_norm": float((image.mean(0) - text.mean(0)).norm()),
        "mean_pair_distance": float((image - text).norm(dim=1).mean()),
        "pca_explained_variance": [round(float(r), 6) for r in ratios[:20]],
        "pca_cumulative": {str(k): float(cumulative[k - 1]) for k in (1, 2, 5, 10, 20, 50) if k <= dim},
        "pca_components_for_90pct": min(dim, int((cumulative < 0.9).sum()) + 1),
    }


def noise_report(stats: dict, sigma: float | None = None, fits: dict | None = None) -> dict:
    """The σ that ``--noise auto`` picks here (None when this CLIP does not align pairs), and what σ
    does; with ``fits`` (kind → fit statistics) also the σ it picks with each fitted adapter."""
    auto, error = _auto_or_none(stats)
    report = {"auto_sigma": auto}
    if auto is None:
        report["auto_error"] = error
    else:
        report["expected_cos_noisy_clean_at_auto"] = expected_cosine(auto, stats["dim"])
    if fits:
        report["auto_sigma_by_adapter"] = {kind: _auto_or_none(stats, fit)[0] for kind, fit in fits.items()}
    if sigma is not None:
        report.update(sigma=sigma, expected_cos_noisy_clean=expected_cosine(sigma, stats["dim"]))
    return report


def _auto_or_none(stats: dict, fit: dict | None = None) -> tuple[float | None, str | None]:
    """(auto σ, None), or (None, why) when the cosine to cover is not positive."""
    try:
        return auto_noise(stats, stats["dim"], fit), None
    except ModelError as exc:
        return None, exc.what


def adapter_effects(text: torch.Tensor, image: torch.Tensor, adapters: dict, seed: int = 0) -> dict:
    """Mean cos(adapted text, own image) per adapter: shift only, and shift + noise (as in training)."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    effects = {"none": {"cos_shift_only": float((text * image).sum(1).mean())}}
    for kind, adapter in adapters.items():
        adapter.train()
        with torch.no_grad():
            shifted = F.normalize(adapter.shift(text), dim=-1)
            noisy = adapter(text)
        effects[kind] = {"cos_shift_only": float((shifted * image).sum(1).mean()),
                         "cos_with_noise": float((noisy * image).sum(1).mean()),
                         "cos_noisy_clean_text": float((noisy * text).sum(1).mean())}
    return effects


# ----------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_pca(ratios: torch.Tensor, path: Path, k: int = 50) -> Path:
    plt = _pyplot()
    k = min(k, len(ratios))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(1, k + 1), ratios[:k].numpy(), color="tab:blue", label="per component")
    ax.plot(range(1, k + 1), ratios[:k].cumsum(0).numpy(), color="tab:orange", marker=".", label="cumulative")
    ax.set(xlabel="principal component of image − text differences", ylabel="explained variance", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_correlation(text: torch.Tensor, image: torch.Tensor, path: Path, k: int = 20) -> Path:
    """Pearson correlation of the ``k`` difference features most correlated with some other one."""
    plt = _pyplot()
    corr = torch.corrcoef((image - text).double().T).nan_to_num(0)
    strength = (corr.abs() - torch.eye(len(corr), dtype=corr.dtype)).max(1).values
    top = strength.argsort(descending=True)[: min(k, len(corr))].sort().values
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    shown = ax.imshow(corr[top][:, top].numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [str(int(i)) for i in top]
    ax.set_xticks(range(len(top)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(top)), labels, fontsize=6)
    ax.set_title("correlation of the most related difference features", fontsize=9)
    fig.colorbar(shown, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_projection(text: torch.Tensor, image: torch.Tensor, adapters: dict, path: Path,
                    points: int = 400, seed: int = 0) -> Path:
    """Image and text vectors on the first two principal axes of both, before and after each adapter."""
    plt = _pyplot()
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(text), generator=generator)[:points]
    text, image = text[rows], image[rows]
    both = torch.cat([text, image])
    centre = both.mean(0)
    axes2d = torch.linalg.svd(both - centre, full_matrices=False).Vh[:2].T
    panels = {"no adapter": text}
    torch.manual_seed(seed)
    for kind, adapter in adapters.items():
        with torch.no_grad():
            panels[kind] = adapter.train()(text)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharex=True, sharey=True, squeeze=False)
    for ax, (name, vecs) in zip(axes[0], panels.items(), strict=True):
        for data, colour, label in ((image, "tab:green", "image"), (vecs, "tab:blue", "text")):
            xy = ((data - centre) @ axes2d).numpy()
            ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5, color=colour, label=label)
        ax.set_title(name, fontsize=9)
    axes[0][0].legend(fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- commands

@dataclass
class PairSource:
    """Where ``gap fit`` / ``gap analyze`` read pairs from, and with which CLIP."""

    clip: str
    pairs: Path
    images: Path | None = None
    split: str | None = None
    limit: int | None = None  # at most this many images
    progress: bool = True


def _encoded(source: PairSource):
    encoder = load_clip(source.clip)
    pairs = read_pairs(source.pairs, source.images, source.split, source.limit)
    text, image = encode_pairs(encoder, pairs, progress=source.progress)
    return encoder, pairs, text, image


def _provenance(encoder, source: PairSource, stats: dict) -> dict:
    return {"clip": source.clip, "clip_identity": encoder.identity, "dim": encoder.dim,
            "pairs": {"file": str(Path(source.pairs).resolve()), "digest": file_digest(Path(source.pairs)),
                      "split": source.split,
                      "pairs": stats["pairs"], "images": stats["images"]}}


def fit_gap(source: PairSource, out: Path, kinds: list[str] | None = None) -> dict:
    """Statistics and fitted adapters of a CLIP's gap, written to a gap folder; returns its gap.json."""
    check_paired_kinds(kinds)  # a bad --adapters is named before any pair is read or encoded
    encoder, pairs, text, image = _encoded(source)
    stats = gap_statistics(text, image, pairs.image_of)
    fitted = fit_adapters(text, image, kinds)
    noise = noise_report(stats, fits={kind: fit for kind, (_, fit) in fitted.items()})
    meta = {**_provenance(encoder, source, stats), "statistics": stats, "noise": noise}
    save_gap(out, fitted, meta)
    return json.loads((Path(out) / "gap.json").read_text())


def analyze_gap(source: PairSource, out: Path, noise: float | None = None) -> dict:
    """The gap report (``analysis.json``) and its plots (PNG) in ``out``; returns the report."""
    encoder, pairs, text, image = _encoded(source)
    stats = gap_statistics(text, image, pairs.image_of)
    sigma = noise if noise is not None else noise_report(stats)["auto_sigma"] or 0.0
    adapters = {kind: adapter for kind, (adapter, _) in fit_adapters(text, image, list(ADAPTERS), sigma).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = [plot_pca(pca_of_differences(text, image), out / "pca_variance.png"),
             plot_correlation(text, image, out / "difference_correlation.png"),
             plot_projection(text, image, adapters, out / "projection.png")]
    report = {**_provenance(encoder, source, stats), "statistics": stats, "noise": noise_report(stats, sigma),
              "adapters_in_sample": adapter_effects(text, image, adapters), "plots": [p.name for p in plots]}
    (out / "analysis.json").write_text(json.dumps(report, indent=2))
    return report


# ----------------------------------------------------------------------------- without pairs

@dataclass
class UnpairedSource:
    """Images and texts that are not paired: a folder of images (e.g. a user's own photos) and a
    text file (the training captions or corpus), read by the caption task's readers."""

    clip: str
    images: Path
    texts: Path
    split: str | None = None  # of a multi-split text file (Karpathy)
    limit: int | None = None  # at most this many images (the first, in folder order)
    progress: bool = True


MIN_UNPAIRED = 2  # a mean and a covariance need at least two of each


def read_texts(path: Path, split: str | None = None) -> list[str]:
    """The distinct texts of a caption file (.txt, .jsonl, Karpathy .json) or a corpus folder."""
    path = require_file(Path(path), "texts file") if not Path(path).is_dir() else Path(path)
    task = get_task("style" if path.is_dir() else "caption")
    return list(task.read(path, ReadOptions(split=split)).values("clip_text"))


def unpaired_images(folder: Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` in folder order (the first ``limit``); folders that cannot be
    read are an error naming them."""
    if not Path(folder).is_dir():
        raise InputError("image folder not found", str(folder), "pass the folder of images with --images")
    found = []
    for item in find_images([Path(folder)]):
        if isinstance(item, Failure):
            raise InputError(f"cannot read: {item.reason}", item.path, "fix its permissions or leave it out")
        found.append(item)
        if limit is not None and len(found) >= limit:
            break
    return found


def unpaired_statistics(text: torch.Tensor, image: torch.Tensor, images: int) -> dict:
    """The gap as far as unpaired sets show it. ``cos_image_caption`` is estimated by the mean
    cosine of each image to its nearest text (no pairs say which text is an image's own)."""
    return {"pairs": 0, "images": images, "texts": len(text), "dim": text.shape[1],
            "cos_image_caption": float(nearest_text_cosine(image, text).mean()),
            "cos_image_caption_estimated_by": "nearest text",
            "cos_caption_unrelated_caption": _mean_pairwise_cosine(text),
            "cos_image_unrelated_image": _mean_pairwise_cosine(image),
            "mean_difference_norm": float((image.mean(0) - text.mean(0)).norm())}


def fit_unpaired_gap(source: UnpairedSource, out: Path, kinds: list[str] | None = None) -> dict:
    """Adapters fitted from unpaired images and texts, written to a gap folder (as ``fit_gap``
    writes one from pairs); unreadable images are left out and counted. Returns its gap.json."""
    kinds = check_unpaired_kinds(kinds)  # before any encoding
    encoder = load_clip(source.clip)
    texts = read_texts(source.texts, source.split)
    paths = unpaired_images(source.images, source.limit)
    found, failures = encode_image_files(encoder, paths, progress=source.progress)
    if len(found) < MIN_UNPAIRED or len(texts) < MIN_UNPAIRED:
        raise InputError(f"{len(found)} readable images and {len(texts)} texts: at least {MIN_UNPAIRED} of each "
                         "are needed", str(source.images), "point --images at a folder of images and --texts at a "
                         "caption file")
    image = torch.stack(list(found.values()))
    text = encode_texts_cached(encoder, texts, progress=source.progress)
    stats = unpaired_statistics(text, image, len(found))
    fitted = fit_unpaired(text, image, kinds)
    noise = noise_report(stats, fits={kind: fit for kind, (_, fit) in fitted.items()})
    meta = {"clip": source.clip, "clip_identity": encoder.identity, "dim": encoder.dim, "pairs": None,
            "unpaired": {"images": {"folder": str(Path(source.images).resolve()), "images": len(found),
                                    "unreadable": len(failures), "files": text_digest(sorted(found))},
                         "texts": {"file": str(Path(source.texts).resolve()), "split": source.split,
                                   "file_digest": file_digest(Path(source.texts)), "texts": len(texts),
                                   "digest": text_digest(texts)}},
            "statistics": stats, "noise": noise}
    save_gap(out, fitted, meta)
    return json.loads((Path(out) / "gap.json").read_text())

