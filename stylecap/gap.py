"""Modality-gap adapters: how text vectors are changed in training so the model can read image vectors.

An adapter is one small ``nn.Module``. In training mode it maps a batch of normalised CLIP *text*
vectors towards where image vectors lie, then adds noise and renormalises. In eval mode it is the
identity: at test time the model reads real image vectors, which need no adapting.

Adding an adapter: subclass :class:`GapAdapter`, give it a ``kind``, implement ``fit`` (from paired
text/image vectors) and ``shift`` and/or ``sample_noise``, and list it in ``ADAPTERS``.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stylecap.errors import UsageError


class GapAdapter(nn.Module):
    """Base adapter: identity shift plus isotropic Gaussian noise N(0, σ²) per dimension."""

    kind: ClassVar[str] = "noise"
    needs_fit: ClassVar[bool] = False

    def __init__(self, dim: int, noise: float):
        super().__init__()
        self.dim = dim
        self.noise = float(noise)

    def forward(self, text_vecs: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return text_vecs
        shifted = self.shift(text_vecs)
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


ADAPTERS: dict[str, type[GapAdapter]] = {cls.kind: cls for cls in (NoiseAdapter,)}


def build_adapter(kind: str, dim: int, noise: float) -> GapAdapter:
    """The one factory for adapters (unfitted; load or fit its state afterwards)."""
    if kind not in ADAPTERS:
        raise UsageError(f"unknown gap adapter '{kind}'", "--adapter", f"choose one of: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind](dim, noise)


def expected_cosine(sigma: float, dim: int) -> float:
    """cos(noisy, clean) for a unit vector plus N(0, σ²) noise in ``dim`` dimensions: ≈ 1/√(1+σ²·D)."""
    return 1.0 / math.sqrt(1.0 + sigma * sigma * dim)
