"""Vectors computed once and kept: CLIP text vectors of a corpus (sharded, resumable) and CLIP image
vectors of a set of files, both cached under the stylecap cache folder and written atomically.

Text vectors are keyed by the encoder and the corpus's content; image vectors by the encoder and each
file's path, size and modification time, so an edited or replaced image is encoded anew.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from stylecap.core.encoders import ClipEncoder
from stylecap.core.images import is_file, iter_image_vectors
from stylecap.core.tasks import Examples
from stylecap.errors import InputError
from stylecap.paths import cache_root, text_digest
from stylecap.progress import simple_progress


class EmbeddingCache:
    """Text vectors computed once per (encoder, corpus) and reused across epochs and runs.

    Vectors are written in shards of ``shard_size`` texts (safetensors, memory-mapped on read), so a
    long encoding job that is interrupted resumes at the first missing shard.
    """

    def __init__(self, encoder: ClipEncoder, root: Path | None = None, shard_size: int = 8192):
        self.encoder = encoder
        self.root = Path(root) if root else cache_root() / "embeddings" / encoder.identity
        self.shard_size = shard_size

    def vectors(self, texts: Sequence[str], progress=None) -> torch.Tensor:
        """Vectors for ``texts`` (in order); ``progress(done, total)`` is called as shards finish."""
        if not texts:
            return torch.empty(0, self.encoder.dim)
        folder = self.root / text_digest(texts)
        folder.mkdir(parents=True, exist_ok=True)
        shards = []
        for index, start in enumerate(range(0, len(texts), self.shard_size)):
            path = folder / f"shard-{index:05d}.safetensors"
            if not path.exists():
                save_vectors(self.encoder.encode_texts(texts[start:start + self.shard_size]), path)
            shards.append(load_file(str(path))["vectors"])
            if progress:
                progress(min(start + self.shard_size, len(texts)), len(texts))
        vecs = torch.cat(shards)
        if vecs.shape[0] != len(texts):
            raise InputError("embedding cache does not match its corpus", str(folder), "delete that folder")
        return vecs


def save_vectors(vectors: torch.Tensor, path: Path) -> None:
    """Write cached vectors (safetensors) atomically: several processes may encode at once, and a
    crash never leaves a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"vectors": vectors.contiguous()}, str(tmp))
    tmp.replace(path)


def image_cache_file(encoder: ClipEncoder, paths: Sequence[str]) -> Path | None:
    """Where the vectors of these image files (in this order) are cached: keyed by the encoder and
    each file's path, size and modification time, so an edited or replaced image is encoded anew.
    None when a file cannot be looked at (it is reported when it is decoded)."""
    try:
        stamps = [f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}" for p in paths for st in [os.stat(p)]]
    except OSError:
        return None
    return cache_root() / "image-vectors" / encoder.identity / f"{text_digest(stamps)}.safetensors"


def encode_texts_cached(encoder: ClipEncoder, texts: Sequence[str], progress: bool = True) -> torch.Tensor:
    with simple_progress("encoding text", len(texts), enabled=progress) as bar:
        task = bar.add_task("encoding text", total=len(texts))
        return EmbeddingCache(encoder).vectors(texts, progress=lambda done, total: bar.update(task, completed=done))


def image_vectors(encoder: ClipEncoder, examples: Examples, where: str, batch_size: int = 64,
                  progress: bool = True) -> tuple[Examples, torch.Tensor]:
    """CLIP image vectors for the examples whose image can be read (see :func:`readable_image_vectors`)."""
    kept, vectors, _ = readable_image_vectors(encoder, examples, where, batch_size, progress)
    return kept, vectors


def readable_image_vectors(encoder: ClipEncoder, examples: Examples, where: str, batch_size: int = 64,
                           progress: bool = True) -> tuple[Examples, torch.Tensor, list[dict]]:
    """CLIP image vectors for the examples whose image can be read, and the images that cannot:
    ``{"image", "reason"}`` each (``{"item", "reason"}`` for an example whose reader found no file to
    name). They are counted in ``skipped`` once per image, however many examples share it (several
    questions or hypotheses per picture); it is an error only when none can be read."""
    skipped = Counter(examples.skipped)
    unnamed = [{"item": ex.id, "reason": "no image file found for it"} for ex in examples if not ex.image]
    images = list(dict.fromkeys(str(Path(ex.image)) for ex in examples if ex.image))  # spelled as decoded
    present = [image for image in images if is_file(image)]
    found, unreadable = encode_image_files(encoder, present, batch_size, progress)
    missing = sorted(set(images) - set(present))
    failures = unnamed + [{"image": image, "reason": "missing"} for image in missing]
    failures += [{"image": failure.path, "reason": failure.reason} for failure in unreadable]
    skipped["missing images"] += len(missing) + len(unnamed)
    skipped["unreadable images"] += len(unreadable)
    kept = [ex for ex in examples if ex.image and str(Path(ex.image)) in found]
    if not kept:
        raise InputError(f"none of the {len(images) + len(unnamed)} images could be read "
                         f"({skipped['missing images']} missing, {skipped['unreadable images']} unreadable)", where,
                         "pass --images DIR, the folder the dataset's image paths are relative to")
    skipped = Counter({k: v for k, v in skipped.items() if v})
    return Examples(kept, skipped), torch.stack([found[str(Path(ex.image))] for ex in kept]), failures


def encode_image_files(encoder: ClipEncoder, paths: Sequence[str | Path], batch_size: int = 64,
                       progress: bool = True) -> tuple[dict[str, torch.Tensor], list]:
    """Vectors of the image files (each encoded once) by path, and the failures with their reasons,
    through the robust, batched decoding of :mod:`stylecap.core.images`. A set that decoded whole is cached, so scoring
    several models on the same images encodes them once."""
    unique = list(dict.fromkeys(str(Path(p)) for p in paths))  # spelled as the decoder reports them
    cached = image_cache_file(encoder, unique)
    if cached is not None and cached.exists():
        return dict(zip(unique, load_file(str(cached))["vectors"], strict=True)), []
    found: dict[str, torch.Tensor] = {}
    failures = []
    with simple_progress("encoding images", len(unique), enabled=progress) as bar:
        task = bar.add_task("encoding images", total=len(unique))
        for batch in iter_image_vectors(encoder, map(Path, unique), batch_size):
            found.update(zip(batch.paths, batch.vectors, strict=True))
            failures += batch.failures
            bar.update(task, advance=len(batch.paths) + len(batch.failures))
    if cached is not None and found and not failures:
        save_vectors(torch.stack([found[p] for p in unique]), cached)
    return found, failures


def all_image_vectors(encoder: ClipEncoder, paths: Sequence[Path], where: str, progress: bool = True) -> torch.Tensor:
    """Vectors [len(paths), D] for images that must all be readable (gap fitting, sweeps): the first
    unreadable one is an error naming the file and why."""
    found, failures = encode_image_files(encoder, paths, progress=progress)
    if failures:
        raise InputError(f"{len(failures)} image(s) could not be read; first: {failures[0].reason}",
                         failures[0].path, f"fix or remove them from {where}")
    return torch.stack([found[str(p)] for p in paths])
