"""Modality-gap adapters: how text vectors are changed in training so the model can read image vectors.

An adapter is one small ``nn.Module``. In training mode it maps a batch of normalised CLIP *text*
vectors towards where image vectors lie, then adds noise and renormalises. In eval mode it is the
identity: at test time the model reads real image vectors, which need no adapting.

Kinds: ``noise`` (CLOSE's Gaussian noise), ``mean-shift`` (add mean image − mean text, then noise),
``linear`` (ridge map text → image, then noise), ``covariance`` (mean shift, then noise shaped like
the covariance of real image − text differences), ``coral`` (whiten the text covariance, recolour
with the image covariance, move to the image mean: second-order alignment, then noise) and
``pseudo-linear`` (the linear map fitted on pseudo pairs: each image with its nearest texts, refined
from the CORAL map).

``mean-shift``, ``coral`` and ``pseudo-linear`` need no pairs (``needs_pairs`` False): they are fitted
from images and texts that are not paired, a user's own photos and the training captions. Without
pairs the cosine an image keeps to its caption cannot be measured; it is estimated by the mean
cosine of each image to its nearest shifted text, each half of the images under the adapter fitted
on the other half (:func:`held_out_nearest_cosine`), which is what ``--noise auto`` then covers.

Adding an adapter: subclass :class:`GapAdapter`, give it a ``kind``, register its buffers (fixed
shapes, known from ``dim``) in ``__init__``, implement ``fit`` (from paired text/image vectors) and
``shift`` and/or ``sample_noise``, and list it in ``ADAPTERS``. Fitted state lives in buffers only, so
``build_adapter(kind, dim, noise)`` + ``load_state_dict`` restores a fitted adapter anywhere.

A *gap folder* (written by ``stylecap gap fit``) holds ``gap.json`` (statistics of the pairs and of
each fit) and one ``<kind>.safetensors`` per fitted adapter.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stylecap.errors import InputError, ModelError, UsageError

GAP_FILE = "gap.json"
GAP_FORMAT = "stylecap-gap"
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # ridge strengths, relative to the mean eigenvalue of XᵀX


class GapAdapter(nn.Module):
    """Base adapter: identity shift plus isotropic Gaussian noise N(0, σ²) per dimension."""

    kind: ClassVar[str] = "noise"
    needs_fit: ClassVar[bool] = False
    needs_pairs: ClassVar[bool] = False  # does ``fit`` need the i-th text to describe the i-th image?

    def __init__(self, dim: int, noise: float):
        super().__init__()
        self.dim = dim
        self.noise = float(noise)

    def forward(self, text_vecs: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return text_vecs
        # Renormalise the shifted vector first, so σ means the same for every kind (see expected_cosine).
        shifted = F.normalize(self.shift(text_vecs), dim=-1)
        return F.normalize(shifted + self.sample_noise(shifted), dim=-1)

    def shift(self, text_vecs: torch.Tensor) -> torch.Tensor:
        return text_vecs

    def sample_noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(like) * self.noise

    def fit(self, text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> dict:
        """Fit from paired, normalised vectors; returns statistics of the fit (JSON-serialisable)."""
        return {}

    def describe(self) -> dict:
        return {"kind": self.kind, "noise": self.noise, "dim": self.dim,
                "expected_cos_noisy_clean": expected_cosine(self.noise, self.dim)}


class NoiseAdapter(GapAdapter):
    """CLOSE's Gaussian noise: spread text vectors so they cover where image vectors may fall."""

    kind = "noise"


class MeanShiftAdapter(GapAdapter):
    """Move text vectors by the mean image − mean text vector of the pairs, then add noise."""

    kind = "mean-shift"
    needs_fit = True

    def __init__(self, dim: int, noise: float):
        super().__init__(dim, noise)
        self.register_buffer("offset", torch.zeros(dim))

    def shift(self, text_vecs: torch.Tensor) -> torch.Tensor:
        return text_vecs + self.offset

    def fit(self, text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> dict:
        self.offset.copy_(image_vecs.mean(0) - text_vecs.mean(0))
        return {"offset_norm": float(self.offset.norm())}


class AffineAdapter(GapAdapter):
    """A fitted affine map of the text vectors (``x @ weight + bias``), then noise: what the linear and
    CORAL adapters share; they differ in how the map is fitted."""

    def __init__(self, dim: int, noise: float):
        super().__init__(dim, noise)
        self.register_buffer("weight", torch.eye(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def shift(self, text_vecs: torch.Tensor) -> torch.Tensor:
        return text_vecs @ self.weight + self.bias


class LinearAdapter(AffineAdapter):
    """A linear map text → image (ridge regression, closed form), then noise.

    The ridge strength is picked on a held-out tenth of the pairs; the reported held-out distance
    and cosine are at that strength (so slightly optimistic), and the final map is refitted on all pairs.
    """

    kind = "linear"
    needs_fit = True
    needs_pairs = True

    def fit(self, text_vecs: torch.Tensor, image_vecs: torch.Tensor, held_out: float = 0.1, seed: int = 0) -> dict:
        x, y = text_vecs.double(), image_vecs.double()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        n_test = max(1, int(len(x) * held_out)) if len(x) >= 10 else 0
        test, train = order[:n_test], order[n_test:]
        stats = {"pairs_fit": len(train), "pairs_held_out": n_test}
        if n_test:
            scores = {ridge: _distance_cosine(_ridge(x[train], y[train], ridge), x[test], y[test]) for ridge in RIDGE_GRID}
            ridge = min(scores, key=lambda r: scores[r][0])
            eye = torch.eye(x.shape[1], dtype=x.dtype)
            before = _distance_cosine((eye, torch.zeros_like(x[0])), x[test], y[test])
            # the mean shift as a baseline: a map is only worth its parameters if it beats this
            shifted = _distance_cosine((eye, y[train].mean(0) - x[train].mean(0)), x[test], y[test])
            stats.update(ridge=ridge, held_out_distance=scores[ridge][0], held_out_cosine=scores[ridge][1],
                         held_out_distance_before=before[0], held_out_cosine_before=before[1],
                         held_out_distance_mean_shift=shifted[0], held_out_cosine_mean_shift=shifted[1])
        else:
            ridge = 1e-2
            stats["ridge"] = ridge
        weight, bias = _ridge(x, y, ridge)
        self.weight.copy_(weight.float())
        self.bias.copy_(bias.float())
        return stats


def _ridge(x: torch.Tensor, y: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_W,b ‖xW + b − y‖² + λ‖W‖², λ = ridge · (mean eigenvalue of the centred XᵀX)."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc
    lam = ridge * float(gram.trace()) / gram.shape[0]
    weight = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), xc.T @ yc)
    return weight, y_mean - x_mean @ weight


def _distance_cosine(map_: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    pred = x @ map_[0] + map_[1]
    return float((pred - y).norm(dim=-1).mean()), float(F.cosine_similarity(pred, y, dim=-1).mean())


class CovarianceAdapter(MeanShiftAdapter):
    """Mean shift, then noise drawn from the covariance Σ of the centred image − text differences.

    The noise moves along the directions in which real pairs differ. ``factor`` holds L with
    LLᵀ = Σ·D/tr(Σ): the total noise energy stays σ²·D, as for isotropic noise, so σ keeps its meaning.
    """

    kind = "covariance"
    needs_pairs = True

    def __init__(self, dim: int, noise: float):
        super().__init__(dim, noise)
        self.register_buffer("factor", torch.eye(dim))

    def sample_noise(self, like: torch.Tensor) -> torch.Tensor:
        return (torch.randn_like(like) @ self.factor.T) * self.noise

    def fit(self, text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> dict:
        stats = super().fit(text_vecs, image_vecs)
        values, vectors = difference_spectrum(text_vecs, image_vecs)
        scale = self.dim / float(values.sum()) if float(values.sum()) > 0 else 1.0
        self.factor.copy_((vectors * (values * scale).sqrt()).float())
        share = values / values.sum().clamp(min=1e-12)
        stats.update(difference_variance=float(values.sum()), top_component_share=float(share[0]),
                     effective_rank=float(1.0 / (share ** 2).sum()))
        return stats


def difference_spectrum(text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, ≥ 0) and eigenvectors (columns) of the covariance of image − text."""
    diffs = (image_vecs - text_vecs).double()
    values, vectors = torch.linalg.eigh(torch.cov(diffs.T).reshape(diffs.shape[1], diffs.shape[1]))
    return values.flip(0).clamp(min=0), vectors.flip(1)


class CoralAdapter(AffineAdapter):
    """Second-order alignment without pairs (CORAL): centre the text vectors, whiten them with the
    text covariance, recolour them with the image covariance and move them to the image mean; then
    noise. The unpaired counterpart of the linear adapter: it matches the image set's mean and
    covariance, where the linear map matches each image.

    Both covariances are shrunk towards a multiple of the identity (Ledoit–Wolf), so a few dozen
    images in a 768-d space still give a well-conditioned map.
    """

    kind = "coral"
    needs_fit = True

    def fit(self, text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> dict:
        x, y = text_vecs.double(), image_vecs.double()
        text_cov, text_shrink = shrunk_covariance(x)
        image_cov, image_shrink = shrunk_covariance(y)
        weight = _matrix_power(text_cov, -0.5) @ _matrix_power(image_cov, 0.5)
        self.weight.copy_(weight.float())
        self.bias.copy_((y.mean(0) - x.mean(0) @ weight).float())
        return {"texts": len(x), "images": len(y), "text_shrinkage": text_shrink, "image_shrinkage": image_shrink}


class PseudoLinearAdapter(AffineAdapter):
    """The linear adapter without pairs: start from the CORAL map, pair each image with the ``NEIGHBOURS``
    texts nearest it under the current map (pseudo pairs), refit the ridge map text → image on them,
    and repeat (the refinement of unsupervised word translation, Conneau et al. 2018, with a ridge map
    in place of an orthogonal one, since the gap is not a rotation). Then noise.

    On the shapes world (1,000 unpaired images, 38k captions) an image's cosine to its own mapped
    caption, held out: CORAL 0.921; one round 0.959, two 0.962, then flat; the ridge map from 1,000
    true pairs 0.965. Three neighbours beat one by 0.001; CSLS hub correction changed nothing. The
    ridge strength is fixed: each image appears in several pseudo pairs, so a held-out tenth of them
    would not be held out.
    """

    kind = "pseudo-linear"
    needs_fit = True
    ROUNDS = 3
    NEIGHBOURS = 3
    RIDGE = 1e-2

    def fit(self, text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> dict:
        start = CoralAdapter(self.dim, 0.0)
        stats = start.fit(text_vecs, image_vecs)
        weight, bias = start.weight.double(), start.bias.double()
        x, y = text_vecs.float(), image_vecs.double()  # the texts may be a whole corpus: mapped a block at a time
        k = min(self.NEIGHBOURS, len(x))
        for _ in range(self.ROUNDS):
            _, nearest = nearest_texts(y, x, k, lambda block, w=weight.float(), b=bias.float(): block @ w + b)
            weight, bias = _ridge(x[nearest.reshape(-1)].double(), y.repeat_interleave(k, 0), self.RIDGE)
        self.weight.copy_(weight.float())
        self.bias.copy_(bias.float())
        return {**stats, "rounds": self.ROUNDS, "neighbours": k, "ridge": self.RIDGE,
                "texts_paired": int(nearest.unique().numel())}


def shrunk_covariance(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(Σ*, ρ): the covariance of the rows of ``x`` shrunk towards m·I (m its mean eigenvalue),
    Σ* = (1 − ρ)·S + ρ·m·I, with the Ledoit–Wolf (2004) estimate of the ρ that minimises the expected
    squared error. ρ ≈ 1 when there are few rows for the dimension, ≈ 0 when there are many."""
    n, dim = x.shape
    centred = x - x.mean(0)
    sample = centred.T @ centred / max(n, 1)
    mean_eigenvalue = float(sample.trace()) / dim
    target = mean_eigenvalue * torch.eye(dim, dtype=x.dtype)
    spread = float(((sample - target) ** 2).sum())  # ‖S − m·I‖²_F
    if spread <= 0:  # already a multiple of the identity (or one row): nothing to shrink
        return sample, 0.0
    # Σ_k ‖x_k x_kᵀ − S‖²_F / n², without forming the n outer products
    norms = (centred ** 2).sum(1)
    per_row = norms ** 2 - 2 * ((centred @ sample) * centred).sum(1) + float((sample ** 2).sum())
    noise = min(float(per_row.sum()) / n ** 2, spread)
    rho = noise / spread
    return (1 - rho) * sample + rho * target, rho


def _matrix_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """A symmetric positive semi-definite matrix to a real power, via its eigendecomposition."""
    values, vectors = torch.linalg.eigh(matrix)
    floor = float(values.max()) * 1e-9  # eigenvalues at rounding level are treated as this, not 0
    return (vectors * values.clamp(min=floor) ** power) @ vectors.T


def nearest_texts(image_vecs: torch.Tensor, text_vecs: torch.Tensor, k: int = 1, transform=None,
                  block: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosines, indices) of the ``k`` texts nearest each image, best first; texts pass through
    ``transform`` (an adapter's map) first. Texts are mapped and scored a block at a time, so a
    corpus of any size costs one block of memory."""
    image_vecs = F.normalize(image_vecs.float(), dim=-1)
    best = torch.full((len(image_vecs), 0), -2.0, device=image_vecs.device)
    where = torch.zeros((len(image_vecs), 0), dtype=torch.long, device=image_vecs.device)
    for start in range(0, len(text_vecs), block):
        texts = text_vecs[start:start + block]
        texts = F.normalize((transform(texts) if transform else texts).float().to(image_vecs.device), dim=-1)
        top = (image_vecs @ texts.T).topk(min(k, len(texts)), dim=1)
        best, order = torch.cat([best, top.values], 1).topk(min(k, best.shape[1] + len(texts)), dim=1)
        where = torch.cat([where, top.indices + start], 1).gather(1, order)
    return best, where


def nearest_text_cosine(image_vecs: torch.Tensor, text_vecs: torch.Tensor) -> torch.Tensor:
    """For each image, its cosine to the nearest text: how close the text side comes to an image
    when no pairs say which text is its own."""
    return nearest_texts(image_vecs, text_vecs)[0][:, 0]


ADAPTERS: dict[str, type[GapAdapter]] = {
    cls.kind: cls for cls in (NoiseAdapter, MeanShiftAdapter, LinearAdapter, CovarianceAdapter, CoralAdapter,
                               PseudoLinearAdapter)}
PAIRED_KINDS = ("mean-shift", "linear", "covariance")  # what `gap fit --pairs` fits unless told
UNPAIRED_KINDS = tuple(kind for kind, cls in ADAPTERS.items() if cls.needs_fit and not cls.needs_pairs)


def build_adapter(kind: str, dim: int, noise: float) -> GapAdapter:
    """The one factory for adapters (unfitted; load or fit its state afterwards)."""
    if kind not in ADAPTERS:
        raise UsageError(f"unknown gap adapter '{kind}'", "--adapter", f"choose one of: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind](dim, noise)


def expected_cosine(sigma: float, dim: int) -> float:
    """cos(noisy, clean) for a unit vector plus N(0, σ²) noise in ``dim`` dimensions: ≈ 1/√(1+σ²·D)."""
    return 1.0 / math.sqrt(1.0 + sigma * sigma * dim)


# ----------------------------------------------------------------------------- σ from the gap

COS_AFTER = "cos_image_caption_after_shift"  # a fitted adapter's mean cos(shifted caption, image)


def auto_noise(stats: dict, dim: int, fit: dict | None = None) -> float:
    """σ such that noisy text sits as far from its clean version as images do from their captions.

    cos(noisy, clean) ≈ 1/√(1+σ²D) = c, with c the mean cos(image, own caption), gives
    σ = √((1/c² − 1)/D); for ViT-L/14 on COCO (c ≈ 0.26, D = 768) that is ≈ 0.13. With a fitted
    adapter's ``fit`` statistics, c is the cosine left after its shift: the noise then covers only
    the part of the gap the shift does not close (gap folders fitted before this was recorded fall
    back to the plain cosine).
    """
    c = covered_cosine(stats, fit)
    if not 0 < c <= 1:
        raise ModelError(f"cannot pick σ automatically: mean cos(image, caption) is {c:.3f}", "--noise auto",
                         "this CLIP does not align pairs; give --noise σ by hand")
    return math.sqrt((1.0 / (c * c) - 1.0) / dim)


def covered_cosine(stats: dict, fit: dict | None = None) -> float:
    """The mean cos(image, caption) that auto σ must cover: after a fitted adapter's shift when its
    fit recorded one, else the plain cosine of the pairs."""
    return float((fit or {}).get(COS_AFTER, stats["cos_image_caption"]))


def resolve_noise(noise: float | str | None, gap_dir: Path | None, dim: int,
                  adapter: str = "noise") -> tuple[float | None, dict | None]:
    """(σ, record): σ unchanged unless it is "auto", then picked from the gap folder's statistics
    (for a fitted ``adapter``: from what its shift leaves of the gap)."""
    if noise != "auto":
        return noise, None
    if gap_dir is None:
        raise UsageError("--noise auto needs fitted gap statistics", "--noise auto",
                         "add --gap GAP (written by `stylecap gap fit`)")
    meta = read_gap(gap_dir, dim)
    fit = meta.get("adapters", {}).get(adapter)
    sigma = auto_noise(meta["statistics"], dim, fit)
    return sigma, {"sigma": sigma, "gap": str(Path(gap_dir).resolve()), "dim": dim, "adapter": adapter,
                   "cos_image_caption": meta["statistics"]["cos_image_caption"],
                   "cos_covered": covered_cosine(meta["statistics"], fit),
                   "expected_cos_noisy_clean": expected_cosine(sigma, dim)}


# ----------------------------------------------------------------------------- gap folders

def fit_adapters(text_vecs: torch.Tensor, image_vecs: torch.Tensor, kinds=None, noise: float = 0.0) -> dict:
    """{kind: (fitted adapter, fit statistics)} for the kinds asked for (default: ``PAIRED_KINDS``)."""
    kinds = kinds or list(PAIRED_KINDS)
    fitted = {}
    for kind in kinds:
        adapter = build_adapter(kind, text_vecs.shape[1], noise)
        stats = adapter.fit(text_vecs.float(), image_vecs.float())
        # what the shift leaves of the gap: the cosine --noise auto covers with this adapter
        with torch.no_grad():
            stats[COS_AFTER] = float(F.cosine_similarity(adapter.shift(text_vecs.float()), image_vecs.float()).mean())
        fitted[kind] = (adapter, stats)
    return fitted


def check_paired_kinds(kinds: list[str] | None) -> None:
    """Every kind asked for names an adapter (a usage error naming it otherwise)."""
    for kind in kinds or []:
        build_adapter(kind, 1, 0.0)


def check_unpaired_kinds(kinds: list[str] | None) -> list[str]:
    """The adapters to fit without pairs (default: every kind that can be); a kind that needs pairs,
    or no kind at all, is a usage error."""
    for kind in kinds or []:
        build_adapter(kind, 1, 0.0)  # an unknown kind is named here
        if ADAPTERS[kind].needs_pairs:
            raise UsageError(f"the '{kind}' adapter is fitted from image–caption pairs", "--adapters",
                             f"from unpaired images and texts fit {' or '.join(UNPAIRED_KINDS)}; or give --pairs")
    return list(kinds or UNPAIRED_KINDS)


def fit_unpaired(text_vecs: torch.Tensor, image_vecs: torch.Tensor, kinds=None, noise: float = 0.0) -> dict:
    """{kind: (fitted adapter, fit statistics)} from a set of texts and a set of images that are not
    paired. What each shift leaves of the gap (``cos_image_caption_after_shift``, what ``--noise
    auto`` covers) is estimated by :func:`held_out_nearest_cosine`."""
    kinds = check_unpaired_kinds(kinds)
    text_vecs, image_vecs = text_vecs.float(), image_vecs.float()
    fitted = {}
    for kind in kinds:
        adapter = build_adapter(kind, text_vecs.shape[1], noise)
        stats = adapter.fit(text_vecs, image_vecs)
        stats[COS_AFTER], stats["cos_after_shift_estimated_by"] = held_out_nearest_cosine(kind, text_vecs, image_vecs)
        fitted[kind] = (adapter, stats)
    return fitted


def held_out_nearest_cosine(kind: str, text_vecs: torch.Tensor, image_vecs: torch.Tensor) -> tuple[float, str]:
    """(estimate, how): the mean cosine of each image to its nearest shifted text, each half of the
    images scored under the adapter fitted on the other half. Scored in-sample, a map fitted to pull
    these very images' nearest texts towards them looks better than it is (pseudo-linear from 50
    images: 0.993 in-sample, 0.892 to the own captions of other images); with fewer than four
    images it falls back to in-sample."""
    if len(image_vecs) < 4:
        everything = torch.arange(len(image_vecs))
        folds, how = [(everything, everything)], "nearest text"
    else:
        order = torch.randperm(len(image_vecs), generator=torch.Generator().manual_seed(0))
        halves = order[: len(order) // 2], order[len(order) // 2:]
        folds, how = [halves, halves[::-1]], "nearest text, each half of the images under the fit on the other half"
    scores = []
    for fit_on, score_on in folds:
        adapter = build_adapter(kind, text_vecs.shape[1], 0.0)
        adapter.fit(text_vecs, image_vecs[fit_on])
        with torch.no_grad():
            scores.append(nearest_texts(image_vecs[score_on], text_vecs, transform=adapter.shift)[0][:, 0])
    return float(torch.cat(scores).mean()), how


def save_gap(out: Path, fitted: dict, meta: dict) -> Path:
    """Write a gap folder: ``gap.json`` (meta + each fit's statistics) and ``<kind>.safetensors``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for kind, (adapter, _) in fitted.items():
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(out / f"{kind}.safetensors"))
    meta = {"format": GAP_FORMAT, "format_version": 1, **meta,
            "adapters": {kind: stats for kind, (_, stats) in fitted.items()}}
    (out / GAP_FILE).write_text(json.dumps(meta, indent=2))
    return out


def read_gap(gap_dir: Path, dim: int | None = None) -> dict:
    """A gap folder's ``gap.json``, checked for format and (when given) the CLIP width."""
    path = Path(gap_dir) / GAP_FILE
    if not path.is_file():
        raise InputError(f"not a gap folder: no {GAP_FILE}", str(gap_dir), "write one with `stylecap gap fit`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"gap statistics are not valid JSON: {exc.msg}", str(path), "refit with `stylecap gap fit`") from None
    if meta.get("format") != GAP_FORMAT:
        raise InputError("not a stylecap gap file", str(path), "refit with `stylecap gap fit`")
    if dim is not None and int(meta["dim"]) != dim:
        raise ModelError(f"the gap was fitted for a {meta['dim']}-d CLIP, this one is {dim}-d", str(gap_dir),
                         f"fit the gap with the same CLIP (`stylecap gap fit --clip …`); it was {meta.get('clip')}")
    return meta


def load_fitted_adapter(kind: str, gap_dir: Path | None, noise: float, dim: int) -> GapAdapter:
    """The adapter of ``kind`` with its fitted state from a gap folder (kinds without a fit need none)."""
    adapter = build_adapter(kind, dim, noise)
    if not adapter.needs_fit:
        return adapter
    if gap_dir is None:
        raise UsageError(f"the '{kind}' adapter must be fitted first", "--adapter",
                         "run `stylecap gap fit --clip … --pairs … --out GAP` (or --images DIR --texts FILE "
                         "without pairs) and pass --gap GAP")
    from safetensors.torch import load_file

    meta = read_gap(gap_dir, dim)
    path = Path(gap_dir) / f"{kind}.safetensors"
    if kind not in meta.get("adapters", {}) or not path.is_file():
        raise InputError(f"the gap folder has no fitted '{kind}' adapter", str(gap_dir),
                         f"refit with `stylecap gap fit --adapters {kind}`")
    adapter.load_state_dict(load_file(str(path)))
    return adapter


def gap_provenance(gap_dir: Path, kind: str, dim: int) -> dict:
    """What a saved model records about the gap it was trained with."""
    meta = read_gap(gap_dir, dim)
    return {"dir": str(Path(gap_dir).resolve()), "clip": meta.get("clip"), "pairs": meta.get("pairs"),
            "statistics": meta["statistics"], "fit": meta.get("adapters", {}).get(kind)}
