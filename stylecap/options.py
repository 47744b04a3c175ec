"""What a user can choose, in one place: each option's default, its help text and its check.

The command line reads defaults and help from these dataclasses (``stylecap.cli.option``), the
library uses the same classes, and every value is checked in ``__post_init__`` — before any model
loads or any text is encoded — so a bad value is one line and exit 2, never a traceback an hour in.
This module imports nothing heavy: ``stylecap --help`` stays fast.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from stylecap.errors import UsageError

ADAPTER_KINDS = ("noise", "mean-shift", "linear", "covariance")  # stylecap.core.gap.ADAPTERS implements each
MAPPERS = ("linear", "mlp")
PRECISIONS = ("auto", "no", "bf16", "fp16")
TRAINING_INPUTS = ("text", "images")
DEVICE_PATTERN = re.compile(r"^(cpu|cuda|mps|xpu|hpu|npu)(:\d+)?$")
MAX_PREFIX = 256  # prefix embeddings: far above the paper's 4–10, far below what would exhaust memory
MAX_NEW_TOKENS = 4096  # a generation limit no captioner needs; the model's own limit applies below it


def opt(default, help: str, flag: str | None = None, factory=None):
    """A dataclass field carrying its command-line help (and its flag when it is not ``--NAME``);
    ``factory`` makes a fresh mutable default per instance."""
    metadata = {"help": help, **({"flag": flag} if flag else {})}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(cls, name: str) -> str:
    """The command-line flag of a field: ``--batch-size`` for ``batch_size`` unless the field says."""
    meta = {f.name: f.metadata for f in fields(cls)}[name]
    return meta.get("flag") or "--" + name.replace("_", "-")


class _Checked:
    """Shared checks for option dataclasses; a failed check names the flag and the fix."""

    def _fail(self, name: str, what: str, fix: str = "") -> None:
        flag = flag_of(type(self), name)
        raise UsageError(what if flag in what else f"{flag}: {what}", None, fix or None)

    def _at_least(self, name: str, low: float, optional: bool = False) -> None:
        value = getattr(self, name)
        if optional and value is None:
            return
        if not _finite(value) or value < low:
            self._fail(name, f"{flag_of(type(self), name)} must be a number ≥ {low}, not {value!r}")

    def _positive(self, name: str) -> None:
        value = getattr(self, name)
        if not _finite(value) or value <= 0:
            self._fail(name, f"{flag_of(type(self), name)} must be above 0, not {value!r}")

    def _one_of(self, name: str, choices: tuple) -> None:
        value = getattr(self, name)
        if value not in choices:
            self._fail(name, f"unknown {flag_of(type(self), name)} value {value!r}", f"choose one of: {', '.join(choices)}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_noise(text: str | float | None) -> float | str | None:
    """A --noise value: None (the task's default), "auto", or a finite σ ≥ 0."""
    if text is None or text == "auto":
        return text
    try:
        sigma = float(text)
    except (TypeError, ValueError):
        sigma = -1.0
    if not (math.isfinite(sigma) and sigma >= 0):
        raise UsageError(f"bad noise level '{text}'", "--noise", "give σ ≥ 0 (e.g. 0.12) or 'auto'")
    return sigma


def check_device(device: str | None, flag: str = "--device") -> str | None:
    if device is not None and not DEVICE_PATTERN.match(device):
        raise UsageError(f"unknown device '{device}'", flag, "use cpu, cuda, cuda:1, mps …")
    return device


@dataclass
class ModelChoices(_Checked):
    """What the user chose about the model; None means the task's default."""

    clip: str = opt("world", "CLIP: 'world' (built-in), NAME:TAG (e.g. ViT-L-14:openai), or a folder.")
    lm: str = opt("tiny-t5", "Language model: a hub name (t5-base, gpt2), a folder, or tiny-t5 / tiny-gpt2.")
    noise: float | str | None = opt(None, "Noise σ per dimension, or 'auto' (from --gap statistics; default: "
                                          "the task's σ scaled to the CLIP width).")
    adapter: str = opt("noise", "Gap adapter: noise | mean-shift | linear | covariance.")
    gap: Path | None = opt(None, "Fitted gap statistics folder from `stylecap gap fit`.")
    prefix_len: int = opt(4, "Prefix embeddings the CLIP vector becomes.")
    mapper: str = opt("linear", "Prefix mapper: linear | mlp.")
    lora: bool = opt(True, "Train a LoRA adapter (False: every LM weight).")
    lora_r: int = opt(16, "LoRA rank.")
    max_target_len: int | None = opt(None, "Max target tokens (default: the task's).")
    num_beams: int | None = opt(None, "Beam width saved as the model's default (default: the task's).")
    extra: dict = opt(None, "Provenance recorded in the saved model.", factory=dict)

    def __post_init__(self):
        self.noise = parse_noise(self.noise)
        self._one_of("adapter", ADAPTER_KINDS)
        self._one_of("mapper", MAPPERS)
        self._at_least("prefix_len", 1)
        if self.prefix_len > MAX_PREFIX:
            self._fail("prefix_len", f"--prefix-len {self.prefix_len} is beyond {MAX_PREFIX}", "the paper uses 4–10")
        self._at_least("lora_r", 1)
        self._at_least("max_target_len", 1, optional=True)
        self._at_least("num_beams", 1, optional=True)


@dataclass
class TrainOptions(_Checked):
    """How the training loop runs (model-independent)."""

    out_dir: Path = opt(Path("runs/model"), "Run folder (checkpoints, metrics, final model/).", flag="--out")
    steps: int | None = opt(None, "Optimiser steps (default: from --epochs).")
    epochs: float = opt(1.0, "Passes over the data when --steps is not given.")
    batch_size: int = opt(32, "Examples per micro-batch and process.")
    grad_accum: int = opt(1, "Micro-batches per optimiser step.")
    lr: float = opt(3e-4, "Peak learning rate (AdamW, warmup then linear decay).")
    warmup: float = opt(0.05, "Warm-up, as a fraction of the steps.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    seed: int = opt(0, "Random seed (data order, noise, init).")
    checkpoint_every: int = opt(500, "Save a resumable checkpoint every N steps.")
    keep_checkpoints: int = opt(2, "Checkpoints kept on disk (the newest).")
    log_every: int = opt(10, "Steps between lines of metrics.jsonl.")
    mixed_precision: str = opt("auto", "auto (bf16 on capable GPUs) | no | bf16 | fp16.")
    num_workers: int = opt(0, "DataLoader worker processes for tokenising.")
    resume: bool = opt(False, "Continue the run in --out from its last checkpoint.")
    progress: bool = opt(True, "Show progress.")

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self._at_least("steps", 1, optional=True)
        self._positive("epochs")
        for name in ("batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints", "log_every"):
            self._at_least(name, 1)
        self._positive("lr")
        self._at_least("weight_decay", 0)
        self._at_least("num_workers", 0)
        if not (_finite(self.warmup) and 0 <= self.warmup < 1):
            self._fail("warmup", f"--warmup must be in [0, 1), not {self.warmup!r}", "e.g. 0.05")
        self._one_of("mixed_precision", PRECISIONS)


@dataclass
class Decoding(_Checked):
    """How captions are decoded; None means the model's saved default."""

    num_beams: int | None = opt(None, "Beam width (default: the model's).", flag="--beam")
    max_new_tokens: int | None = opt(None, "Max new tokens per caption.", flag="--max-length")
    do_sample: bool = opt(False, "Sample instead of beam search.", flag="--sample")
    temperature: float = opt(1.0, "Sampling temperature (with --sample).")
    top_p: float | None = opt(None, "Nucleus sampling mass (with --sample).")
    num_return_sequences: int = opt(1, "Captions per image, best first.", flag="--num-captions")

    def __post_init__(self):
        self._at_least("num_beams", 1, optional=True)
        self._at_least("max_new_tokens", 1, optional=True)
        if self.max_new_tokens is not None and self.max_new_tokens > MAX_NEW_TOKENS:
            self._fail("max_new_tokens", f"--max-length {self.max_new_tokens} is beyond {MAX_NEW_TOKENS} tokens",
                       "captions need a few dozen")
        self._positive("temperature")
        if self.top_p is not None and not (_finite(self.top_p) and 0 < self.top_p <= 1):
            self._fail("top_p", f"--top-p must be in (0, 1], not {self.top_p!r}", "use e.g. 0.9")
        self._at_least("num_return_sequences", 1)

    def check(self) -> None:
        """Re-run the checks (fields may have been changed after construction)."""
        self.__post_init__()

    def generate_kwargs(self, default_beams: int = 1) -> dict:
        """Arguments for ``CloseModel.generate``; beam search keeps at least as many beams as captions."""
        self.check()
        kwargs = vars(self).copy()
        if not self.do_sample:
            kwargs["num_beams"] = max(self.num_beams or default_beams, self.num_return_sequences)
        return kwargs


@dataclass
class Loading(_Checked):
    """How images are read: batch size, decoding processes, the decompression-bomb limit, the device."""

    batch_size: int = opt(32, "Images per batch.")
    num_workers: int | None = opt(None, "Image decoding processes (default: cores - 1, at most 8).", flag="--workers")
    # Pillow's own hard limit (twice its warning threshold): far above any camera, far below a bomb.
    max_pixels: int = opt(178_956_970, "Refuse images with more pixels (decompression-bomb guard).")
    device: str | None = opt(None, "cpu, cuda, cuda:1 … (default: cuda when available).")

    def __post_init__(self):
        self._at_least("batch_size", 1)
        self._at_least("num_workers", 0, optional=True)
        self._at_least("max_pixels", 1)
        check_device(self.device)


DEFAULT_MAX_PIXELS = Loading.__dataclass_fields__["max_pixels"].default
