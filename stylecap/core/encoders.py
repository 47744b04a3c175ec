"""Frozen CLIP encoders (open_clip) and the embedding cache.

A CLIP is named by a *spec* string; every form goes through open_clip's own loaders:

* ``world``                     the tiny CLIP shipped with stylecap (trained on the synthetic world)
* ``ViT-L-14:openai``           an open_clip model name and pretrained tag (downloaded when online)
* ``ViT-B-32:/path/ckpt.pt``    an open_clip model name and a local checkpoint file
* ``/path/to/folder``           a folder with ``open_clip_config.json`` + ``open_clip_model.safetensors``
  (the layout open_clip publishes on model hubs; :func:`save_clip` writes it)
* ``hf-hub:org/repo``           a model hub repository in that layout (online)
* ``/path/to/config.json[:/path/ckpt]``  a custom model config (``model_cfg`` JSON), optionally with weights

Vectors are always float32 and L2-normalised; the model stays frozen in eval mode.
"""
from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from stylecap.errors import ModelError, first_line
from stylecap.paths import asset, file_digest, text_digest

BUILTIN_CLIPS = {"world": "world-clip"}
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the accelerator supports it; full precision on CPU (bf16 there is slow)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass
class ClipSource:
    """How open_clip is asked for a model: ``model_name`` (maybe with a schema) and ``pretrained``."""

    model_name: str
    pretrained: str | None
    identity: str  # stable id for caches: the spec for hub models, a content hash for local files


def resolve_clip(spec: str) -> ClipSource:
    """Turn a user's CLIP spec into open_clip arguments, checking local files exist."""
    import open_clip

    spec = spec.strip()
    if spec in BUILTIN_CLIPS:
        folder = asset(BUILTIN_CLIPS[spec])
        if not (folder / WEIGHTS_FILE).exists():
            raise ModelError(f"the built-in CLIP '{spec}' is not in this installation", str(folder),
                             "reinstall stylecap or rebuild it with `stylecap world clip`")
        return ClipSource(f"local-dir:{folder}", None, f"{spec}-{_model_files_digest(folder)}")
    if spec.startswith("hf-hub:"):
        return ClipSource(spec, None, spec)
    path = Path(spec)
    if path.is_dir():
        if not (path / CONFIG_FILE).exists():
            raise ModelError(f"no {CONFIG_FILE} in the CLIP folder", str(path),
                             "point --clip at a folder written by stylecap/open_clip, or use NAME:TAG")
        return ClipSource(f"local-dir:{path.resolve()}", None, f"dir-{_model_files_digest(path)}")
    name, _, pretrained = spec.partition(":")
    if name.endswith(".json"):
        return _custom_config_source(Path(name), pretrained or None)
    if name not in open_clip.list_models():
        raise ModelError(f"unknown CLIP model '{name}'", f"--clip {spec}",
                         "use an open_clip name such as ViT-L-14:openai, a model folder, or 'world'")
    if not pretrained:
        raise ModelError(f"no pretrained weights named for CLIP '{name}'", f"--clip {spec}",
                         f"add a tag or a checkpoint file, e.g. {name}:openai")
    if Path(pretrained).suffix in {".pt", ".pth", ".bin", ".safetensors"} or Path(pretrained).exists():
        if not Path(pretrained).is_file():
            raise ModelError("CLIP checkpoint file not found", pretrained, "check the path")
        return ClipSource(name, pretrained, f"{name}-{file_digest(Path(pretrained))}")
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelError(f"unknown pretrained tag '{pretrained}' for CLIP '{name}'", f"--clip {spec}",
                         f"known tags: {tags}")
    return ClipSource(name, pretrained, spec)


def _model_files_digest(folder: Path) -> str:
    """A CLIP folder's identity: its open_clip files (config and weights) only, so stats or notes
    written beside them leave caches and trained models valid."""
    return file_digest(folder, pattern="open_clip_*")


def _custom_config_source(config_path: Path, checkpoint: str | None) -> ClipSource:
    """A custom model config JSON (optionally wrapped as ``{"model_cfg": ...}``), registered with open_clip."""
    import open_clip

    if not config_path.is_file():
        raise ModelError("CLIP model config not found", str(config_path), "check the path")
    cfg = json.loads(config_path.read_text())
    cfg = cfg.get("model_cfg", cfg)
    name = f"stylecap-custom-{text_digest([json.dumps(cfg, sort_keys=True)])}"
    open_clip.factory._MODEL_CONFIGS[name] = cfg  # the registry add_model_config fills, keyed by our name
    parts = [json.dumps(cfg, sort_keys=True)]
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise ModelError("CLIP checkpoint file not found", checkpoint, "check the path")
        parts.append(file_digest(Path(checkpoint)))
    return ClipSource(name, checkpoint, f"custom-{text_digest(parts)}")


class ClipEncoder:
    """A frozen open_clip model with batched, normalised ``encode_texts`` / ``encode_images``."""

    def __init__(self, spec: str, device: str | torch.device | None = None):
        import open_clip

        self.spec = spec
        self.source = resolve_clip(spec)
        self.device = torch.device(device) if device else default_device()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.source.model_name, pretrained=self.source.pretrained, device=self.device)
            self.tokenizer = open_clip.get_tokenizer(self.source.model_name)
        except (RuntimeError, FileNotFoundError, ValueError, OSError) as exc:
            raise ModelError(f"could not load CLIP '{spec}': {first_line(exc)}", None,
                             "check the name, or that you are online for downloadable weights") from exc
        self.model = model.eval().requires_grad_(False)
        self.preprocess: Callable = preprocess
        self.dim = int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") \
            and isinstance(self.model.text_projection, torch.Tensor) else self._probe_dim()
        self.identity = self.source.identity

    def _probe_dim(self) -> int:
        return int(self.encode_texts(["a"]).shape[-1])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
            with self._autocast():
                out.append(self.model.encode_text(tokens).float())
        return _normalise(out, self.dim)

    @torch.inference_mode()
    def encode_image_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """Encode a batch already preprocessed with :attr:`preprocess`."""
        with self._autocast():
            vecs = self.model.encode_image(pixels.to(self.device, non_blocking=True)).float()
        return F.normalize(vecs, dim=-1).cpu()

    def encode_images(self, images: Iterable, batch_size: int = 64) -> torch.Tensor:
        """Encode in-memory PIL images or a few image files (many files: ``evaluate.encode_image_files``
        decodes them in parallel and reports unreadable ones)."""
        from PIL import Image

        out, batch = [], []
        for image in images:
            if not isinstance(image, Image.Image):
                with Image.open(image) as handle:
                    image = handle.convert("RGB")
            batch.append(self.preprocess(image.convert("RGB")))
            if len(batch) == batch_size:
                out.append(self.encode_image_batch(torch.stack(batch)))
                batch = []
        if batch:
            out.append(self.encode_image_batch(torch.stack(batch)))
        return _normalise(out, self.dim)

    def _autocast(self):
        dtype = autocast_dtype(self.device)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)


def _normalise(chunks: list[torch.Tensor], dim: int) -> torch.Tensor:
    if not chunks:
        return torch.empty(0, dim)
    return F.normalize(torch.cat(chunks).float(), dim=-1).cpu()


@functools.lru_cache(maxsize=4)
def load_clip(spec: str, device: str | None = None) -> ClipEncoder:
    """Load (once per process) the frozen CLIP named by ``spec``."""
    logging.getLogger("open_clip").setLevel(logging.ERROR)
    return ClipEncoder(spec, device)


def save_clip(model: torch.nn.Module, model_cfg: dict, out_dir: Path, preprocess_cfg: dict | None = None) -> Path:
    """Write an open_clip model in the folder layout that ``local-dir:`` (and ``--clip FOLDER``) loads."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    visual = model.visual
    pre = {"mean": list(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)),
           "std": list(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))}
    pre.update(preprocess_cfg or {})
    (out_dir / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre}, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    return out_dir
