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

from stylecap.core.weights import (
    LOAD_ERRORS,
    PICKLE_SUFFIXES,
    check_safetensors,
    load_error_line,
    read_json_object,
    refuse_hub_custom_code,
    refuse_pickle_file,
    state_dict_mismatch,
)
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
        return _folder_source(path)
    name, _, pretrained = spec.partition(":")
    where = f"CLIP {spec}"
    if name.endswith(".json"):
        return _custom_config_source(Path(name), pretrained or None)
    if _names_a_path(name):  # a folder that was moved or deleted, not a model name
        raise ModelError("CLIP folder not found", str(path), MOVED_FIX)
    if name not in open_clip.list_models():
        raise ModelError(f"unknown CLIP model '{name}'", where,
                         "name an open_clip model such as ViT-L-14:openai, a CLIP folder, or 'world'")
    if not pretrained:
        raise ModelError(f"no pretrained weights named for CLIP '{name}'", where,
                         f"add a tag or a checkpoint file, e.g. {name}:openai")
    if Path(pretrained).suffix in {".safetensors", *PICKLE_SUFFIXES} or Path(pretrained).exists():
        return ClipSource(name, pretrained, f"{name}-{_checkpoint_digest(pretrained)}")
    if pretrained not in open_clip.list_pretrained_tags_by_model(name):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelError(f"unknown pretrained tag '{pretrained}' for CLIP '{name}'", where, f"known tags: {tags}")
    return ClipSource(name, pretrained, spec)


MOVED_FIX = ("check the path; a trained model names its CLIP by the absolute path it was trained with, so put a "
             "moved CLIP folder back there")


def _names_a_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.startswith((".", "~"))


def _folder_source(path: Path) -> ClipSource:
    """A CLIP folder in open_clip's layout, whose weights must be its safetensors file: open_clip would
    otherwise pick up whichever pickle lies beside the config."""
    if not (path / CONFIG_FILE).exists():
        raise ModelError(f"no {CONFIG_FILE} in the CLIP folder", str(path),
                         "use a folder written by stylecap or open_clip (open_clip_config.json + "
                         "open_clip_model.safetensors), a NAME:TAG, or 'world'")
    if not (path / WEIGHTS_FILE).exists():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        what = (f"its weights are a pickle ({pickles[0]}), which stylecap never loads" if pickles
                else f"no {WEIGHTS_FILE}")
        raise ModelError(f"CLIP folder without safetensors weights: {what}", str(path),
                         f"save the weights as {WEIGHTS_FILE} (safetensors.torch.save_file)")
    return ClipSource(f"local-dir:{path.resolve()}", None, f"dir-{_model_files_digest(path)}")


def _checkpoint_digest(checkpoint: str) -> str:
    """The identity of a user's CLIP checkpoint file, which must exist and be safetensors."""
    if not Path(checkpoint).is_file():
        raise ModelError("CLIP checkpoint file not found", checkpoint, "check the path")
    refuse_pickle_file(checkpoint, "CLIP checkpoint")
    return file_digest(Path(checkpoint))


def _model_files_digest(folder: Path) -> str:
    """A CLIP folder's identity: its open_clip files (config and weights) only, so stats or notes
    written beside them leave caches and trained models valid."""
    return file_digest(folder, pattern="open_clip_*")


def _custom_config_source(config_path: Path, checkpoint: str | None) -> ClipSource:
    """A custom model config JSON (optionally wrapped as ``{"model_cfg": ...}``), registered with open_clip."""
    import open_clip

    if not config_path.is_file():
        raise ModelError("CLIP model config not found", str(config_path), "check the path")
    cfg = read_json_object(config_path, "CLIP model config")
    cfg = cfg.get("model_cfg", cfg)
    towers = [cfg.get(key) for key in ("vision_cfg", "text_cfg")] if isinstance(cfg, dict) else []
    if not towers or not all(isinstance(tower, dict) for tower in towers):
        raise ModelError("not an open_clip model config: no vision_cfg and text_cfg objects", str(config_path),
                         "pass an open_clip model config (model_cfg JSON)")
    name = f"stylecap-custom-{text_digest([json.dumps(cfg, sort_keys=True)])}"
    open_clip.factory._MODEL_CONFIGS[name] = cfg  # the registry add_model_config fills, keyed by our name
    parts = [json.dumps(cfg, sort_keys=True)]
    if checkpoint:
        parts.append(_checkpoint_digest(checkpoint))
    return ClipSource(name, checkpoint, f"custom-{text_digest(parts)}")


class ClipEncoder:
    """A frozen open_clip model with batched, normalised ``encode_texts`` / ``encode_images``."""

    def __init__(self, spec: str, device: str | torch.device | None = None):
        import open_clip

        self.spec = spec
        self.source = resolve_clip(spec)
        self.device = torch.device(device) if device else default_device()
        model_name, pretrained = checked_files(self.source, spec)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained,
                                                                         device=self.device)
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except (*LOAD_ERRORS, AssertionError) as exc:  # open_clip checks some checkpoint shapes with assert
            raise _clip_error(spec, pretrained, exc) from exc
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


def checked_files(source: ClipSource, spec: str) -> tuple[str, str | None]:
    """The open_clip arguments for ``source`` once every file open_clip will read is known to be safe:
    weights in safetensors and intact (downloaded first for hub repositories and pretrained tags, so
    a failed download is our one line rather than open_clip's log output), no custom code."""
    import open_clip

    name, pretrained = source.model_name, source.pretrained
    if name.startswith(HUB_PREFIX):
        name = LOCAL_PREFIX + str(_hub_folder(name[len(HUB_PREFIX):], spec))
    if name.startswith(LOCAL_PREFIX):
        folder = Path(name[len(LOCAL_PREFIX):])
        check_safetensors(folder / WEIGHTS_FILE, "CLIP weights file")
        config = read_json_object(folder / CONFIG_FILE, "CLIP config")
        _refuse_text_tower_code(config.get("model_cfg") or {})
        return name, None
    _refuse_text_tower_code(open_clip.get_model_config(name) or {})
    if pretrained and (Path(pretrained).suffix == ".safetensors" or Path(pretrained).is_file()):
        refuse_pickle_file(pretrained, "CLIP checkpoint")
        check_safetensors(Path(pretrained), "CLIP checkpoint")
    elif pretrained:
        _fetch_tag_weights(name, pretrained, spec)
    return name, pretrained


HUB_PREFIX, LOCAL_PREFIX = "hf-hub:", "local-dir:"
OFFLINE_FIX = "connect once to download it (it is cached), or use a local CLIP folder or 'world'"


def _hub_folder(repo: str, spec: str) -> Path:
    """A hub repository in open_clip's layout, fetched as config + safetensors weights only."""
    config = _download(repo, CONFIG_FILE, spec)
    _download(repo, WEIGHTS_FILE, spec)
    return Path(config).parent


def _fetch_tag_weights(name: str, tag: str, spec: str) -> None:
    """Put a pretrained tag's safetensors weights in the hub cache, where open_clip looks first."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("file"):
        refuse_pickle_file(cfg["file"], "CLIP checkpoint")
        return
    if not cfg.get("hf_hub"):
        raise ModelError(f"open_clip offers CLIP '{name}:{tag}' only as a pickle download, which stylecap never "
                         "loads", f"CLIP {spec}", "use another tag, or a safetensors checkpoint (NAME:FILE.safetensors)")
    repo, filename = cfg["hf_hub"].rstrip("/"), ""
    if not cfg["hf_hub"].endswith("/"):
        repo, _, filename = repo.rpartition("/")
    _download(repo, _safetensors_name(filename), spec)


def _safetensors_name(filename: str) -> str:
    """The safetensors twin open_clip looks for before a pickle of this name."""
    if not filename or filename == "open_clip_pytorch_model.bin":
        return WEIGHTS_FILE
    return str(Path(filename).with_suffix(".safetensors"))


def _download(repo: str, filename: str, spec: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        return hf_hub_download(repo, filename)
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"CLIP '{spec}' is not in the local hub cache and cannot be downloaded now "
                         f"({first_line(exc, 100)})", f"{repo}/{filename}", OFFLINE_FIX) from None
    except RemoteEntryNotFoundError:
        raise ModelError(f"CLIP '{spec}' has no {filename} on the hub, and stylecap loads no pickle",
                         f"{repo}", "use a CLIP published with safetensors weights") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not download CLIP '{spec}': {first_line(exc, 200)}", f"{repo}/{filename}",
                         OFFLINE_FIX) from None


def _refuse_text_tower_code(model_cfg: dict) -> None:
    """A CLIP whose text tower is a transformers model: open_clip loads its config and tokenizer without
    saying whether custom code may run (transformers would ask on stdin); refuse such code first."""
    text_cfg = model_cfg.get("text_cfg") if isinstance(model_cfg, dict) else None
    for key, part in (("hf_model_name", "config"), ("hf_tokenizer_name", "tokenizer")):
        ref = text_cfg.get(key) if isinstance(text_cfg, dict) else None
        if isinstance(ref, str) and ref:
            refuse_hub_custom_code(ref, part)


def _clip_error(spec: str, checkpoint: str | None, exc: BaseException) -> ModelError:
    mismatch = state_dict_mismatch(exc)
    if isinstance(exc, AssertionError):  # open_clip's own shape checks
        mismatch = str(exc) or "a tensor of another shape"
    if mismatch:
        return ModelError(f"the CLIP weights do not fit the architecture named in '{spec}': {mismatch}", checkpoint,
                          "name the architecture the checkpoint was trained as (NAME:FILE or CONFIG.json:FILE)")
    return ModelError(f"could not load CLIP '{spec}': {load_error_line(exc)}", None,
                      "check the CLIP's files (open_clip_config.json, weights) or the spec")


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
