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

ADAPTER_KINDS = ("noise", "mean-shift", "linear", "covariance", "coral", "pseudo-linear")  # stylecap.core.gap.ADAPTERS implements each
MAPPERS = ("linear", "mlp")
PRECISIONS = ("auto", "no", "bf16", "fp16")
TRAINING_INPUTS = ("text", "images")
DEVICE_PATTERN = re.compile(r"^(cpu|cuda|mps|xpu|hpu|npu)(:\d+)?$")
MAX_PREFIX = 256  # prefix embeddings: far above the paper's 4–10, far below what would exhaust memory
MAX_RETRIEVED = 32  # retrieved texts per input: beyond a few they only lengthen the decoder's input
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
    adapter: str = opt("noise", "Gap adapter: noise | mean-shift | linear | covariance | coral | pseudo-linear.")
    gap: Path | None = opt(None, "Fitted gap statistics folder from `stylecap gap fit`.")
    prefix_len: int = opt(4, "Prefix embeddings the CLIP vector becomes.")
    mapper: str = opt("linear", "Prefix mapper: linear | mlp.")
    lora: bool = opt(True, "Train a LoRA adapter (False: every LM weight).")
    lora_r: int = opt(16, "LoRA rank.")
    max_target_len: int | None = opt(None, "Max target tokens (default: the task's).")
    num_beams: int | None = opt(None, "Beam width saved as the model's default (default: the task's).")
    memory_projection: bool = opt(False, "At test time read, in place of the image vector, the softmax(cos/τ)-weighted "
                                         "mix of the training texts' vectors nearest it (DeCap); the texts' vectors "
                                         "are saved in the model.")
    # τ and k chosen on the shapes world's validation images: below τ 0.005 the mix is close to the
    # nearest text, which did as well as any wider mix there; k matters little at that τ
    projection_tau: float = opt(0.002, "Temperature τ of --memory-projection: lower follows the nearest texts more.")
    projection_k: int = opt(8, "Training texts mixed per image by --memory-projection.")
    retrieve: int = opt(0, "Give the decoder the K training texts nearest its input vector as extra input text "
                           "(queried with the noisy text vector in training, the image vector at test time); 0: off.")
    memory_size: int | None = opt(None, "Keep at most N training texts in the memory of --memory-projection / "
                                        "--retrieve (a seeded sample; default: all).")
    extra: dict = opt(None, "Provenance recorded in the saved model.", factory=dict)

    def __post_init__(self):
        self.noise = parse_noise(self.noise)
        self._check_memory()
        self._one_of("adapter", ADAPTER_KINDS)
        self._one_of("mapper", MAPPERS)
        self._at_least("prefix_len", 1)
        if self.prefix_len > MAX_PREFIX:
            self._fail("prefix_len", f"--prefix-len {self.prefix_len} is beyond {MAX_PREFIX}", "the paper uses 4–10")
        self._at_least("lora_r", 1)
        self._at_least("max_target_len", 1, optional=True)
        if self.max_target_len is not None and self.max_target_len > MAX_NEW_TOKENS:
            self._fail("max_target_len", f"--max-target-len {self.max_target_len} is beyond {MAX_NEW_TOKENS} tokens",
                       "targets need a few dozen; the LM's own limit applies below this")
        self._at_least("num_beams", 1, optional=True)

    def _check_memory(self) -> None:
        self._positive("projection_tau")
        self._at_least("projection_k", 1)
        self._at_least("retrieve", 0)
        if self.retrieve > MAX_RETRIEVED:
            self._fail("retrieve", f"--retrieve {self.retrieve} is beyond {MAX_RETRIEVED} texts",
                       "a few (2–8) give the decoder the evidence; more only lengthen its input")
        self._at_least("memory_size", 1, optional=True)
        if self.memory_size is not None and not self.uses_memory:
            self._fail("memory_size", "--memory-size sizes the memory of --memory-projection or --retrieve",
                       "add one of them, or drop --memory-size")

    @property
    def uses_memory(self) -> bool:
        """Does the model keep its training texts' vectors for a memory lever?"""
        return self.memory_projection or self.retrieve > 0


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
    mixed_precision: str = opt("auto", "auto (bf16 where the GPU or CPU computes it natively) | no | bf16 | fp16.")
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


MAX_RERANK = 64  # candidates sampled per image by --rerank: each costs a decode and a CLIP text encoding


@dataclass
class Decoding(_Checked):
    """How captions are decoded; None means the model's saved default."""

    num_beams: int | None = opt(None, "Beam width (default: the model's).", flag="--beam")
    max_new_tokens: int | None = opt(None, "Max new tokens per caption.", flag="--max-length")
    do_sample: bool = opt(False, "Sample instead of beam search.", flag="--sample")
    temperature: float = opt(1.0, "Sampling temperature (with --sample or --rerank).")
    top_p: float | None = opt(None, "Nucleus sampling mass (with --sample or --rerank).")
    num_return_sequences: int = opt(1, "Captions per image, best first.", flag="--num-captions")
    rerank: int = opt(0, f"Sample N captions per image and keep those CLIP places nearest the image (0: off; at "
                         f"most {MAX_RERANK}; captioning models).")

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
        self._at_least("rerank", 0)
        if self.rerank == 1:
            self._fail("rerank", "--rerank 1 would keep its only sample", "rerank 2 or more samples (8 to 32 is plenty)")
        if self.rerank > MAX_RERANK:
            self._fail("rerank", f"--rerank {self.rerank} samples more captions per image than {MAX_RERANK}",
                       "8 to 32 is plenty")
        if self.rerank and (self.num_beams or 1) > 1:
            self._fail("rerank", f"--rerank samples its candidates, so --beam {self.num_beams} does not apply",
                       "leave --beam out")
        if self.rerank and self.rerank < self.num_return_sequences:
            self._fail("rerank", f"--rerank {self.rerank} samples fewer captions than --num-captions "
                                 f"{self.num_return_sequences} asks to keep", "sample at least as many")

    def check(self) -> None:
        """Re-run the checks (fields may have been changed after construction)."""
        self.__post_init__()

    def generate_kwargs(self, default_beams: int = 1) -> dict:
        """Arguments for ``CloseModel.generate``; beam search keeps at least as many beams as captions;
        with ``rerank`` it samples that many candidates (the caller keeps the best by CLIP)."""
        self.check()
        kwargs = vars(self).copy()
        del kwargs["rerank"]
        if self.rerank:  # candidates for stylecap.core.rerank.generate_reranked
            return {**kwargs, "do_sample": True, "num_beams": 1, "num_return_sequences": self.rerank}
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


BENCH_SIZES = ("tiny", "paper")  # stylecap.experiments.train_speed builds the models of each
SCALE_STAGES = ("read", "reread", "cache", "train", "corpus")  # stylecap.experiments.scale runs each


@dataclass
class TrainBench(_Checked):
    """Settings of `stylecap bench train`. ``clip_cfg``/``lm_cfg`` override the random models' shapes
    (an open_clip model config, a transformers config with ``model_type``), e.g. to run the paper-size
    path with tiny shapes in a test."""

    size: str = opt("tiny", "tiny (the world CLIP, tiny-t5) | paper (ViT-L/14 + t5-base shapes, random weights).")
    steps: int | None = opt(None, "Timed steps per path (default: 100 tiny, 3 paper).")
    warmup_steps: int = opt(1, "Untimed steps per path, before the timed ones.")
    batch_size: int = opt(32, "Captions per step, the same for both paths.")
    coco_captions: int = opt(590_000, "Captions of the COCO-sized job (1 epoch) whose time is estimated.")
    threads: int | None = opt(None, "CPU threads of torch for both paths (default: torch's, one per core); "
                                    "1 measures more steadily on a CPU that other jobs share.")
    clip_cfg: dict | None = None
    lm_cfg: dict | None = None

    def __post_init__(self):
        self._one_of("size", BENCH_SIZES)
        if self.steps is None:
            self.steps = 100 if self.size == "tiny" else 3  # a paper-size step takes many seconds on a CPU
        self._at_least("steps", 1)
        self._at_least("warmup_steps", 0)
        self._at_least("batch_size", 1)
        self._at_least("coco_captions", 1)
        self._at_least("threads", 1, optional=True)


@dataclass
class ScaleBench(_Checked):
    """Settings of `stylecap bench scale`."""

    sizes: tuple[int, ...] | str = opt("10000,100000,1000000", "Caption counts, comma-separated.")
    out: Path = opt(Path("runs/bench/scale"), "Folder for scale.json and scale.png.")
    clip: str = opt("world", "CLIP of the cache and train stages: 'world', NAME:TAG, a folder or a config JSON.")
    train_steps: int = opt(50, "Steps of the train stage (capped: its memory, set by the data, is the point).")
    batch_size: int = opt(32, "Batch size of the train stage.")
    seed: int = opt(0, "Seed of the shapes world's captions.")
    stages: tuple[str, ...] | str = opt(",".join(SCALE_STAGES), "Stages to run, comma-separated.")
    threads: int | None = opt(None, "CPU threads of each stage process (default: one per core).")

    def __post_init__(self):
        self.out = Path(self.out)
        self.sizes = tuple(sorted(set(self._counts(self.sizes))))
        if not self.sizes or min(self.sizes) < 1:
            self._fail("sizes", "--sizes must be caption counts of 1 or more", "e.g. 10000,100000,1000000")
        self.stages = _comma_list(self.stages)
        if not self.stages:
            self._fail("stages", "--stages names no stage", f"choose from: {', '.join(SCALE_STAGES)}")
        for stage in self.stages:
            if stage not in SCALE_STAGES:
                self._fail("stages", f"unknown stage {stage!r}", f"choose from: {', '.join(SCALE_STAGES)}")
        self._at_least("train_steps", 1)
        self._at_least("batch_size", 1)
        self._at_least("threads", 1, optional=True)

    def _counts(self, sizes) -> list[int]:
        counts = []
        for part in _comma_list(sizes):
            try:
                counts.append(int(str(part).replace("_", "")))
            except ValueError:
                self._fail("sizes", f"--sizes: {part!r} is not a whole number",
                           "give caption counts separated by commas, e.g. 10000,100000,1000000")
        return counts


def _comma_list(value) -> tuple[str, ...]:
    """``"a, b"`` or ``("a", "b")`` → ("a", "b")."""
    parts = value.split(",") if isinstance(value, str) else value
    return tuple(str(part).strip() for part in parts if str(part).strip())
