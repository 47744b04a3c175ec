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

    def view(self, texts: Sequence[str], progress=None) -> "CachedVectors":
        """Vectors for ``texts`` (in order), read through the memory-mapped shards, encoding the
        missing ones; ``progress(done, total)`` is called as shards finish."""
        if not texts:
            return CachedVectors([torch.empty(0, self.encoder.dim)])
        folder = self.root / text_digest(texts)
        folder.mkdir(parents=True, exist_ok=True)
        shards = []
        for index, start in enumerate(range(0, len(texts), self.shard_size)):
            path = folder / f"shard-{index:05d}.safetensors"
            if not path.exists():
                save_vectors(self.encoder.encode_texts(texts[start:start + self.shard_size]), path)
            shards.append(load_file(str(path))["vectors"])  # safetensors maps the file: no copy is made
            if progress:
                progress(min(start + self.shard_size, len(texts)), len(texts))
        vectors = CachedVectors(shards)
        if len(vectors) != len(texts):
            raise InputError("embedding cache does not match its corpus", str(folder), "delete that folder")
        return vectors

    def vectors(self, texts: Sequence[str], progress=None) -> torch.Tensor:
        """The same vectors as one tensor in memory, for arithmetic over all of them."""
        return self.view(texts, progress).tensor()


class CachedVectors:
    """Rows of several memory-mapped shards read as one ``[N, D]`` table: indexing (an int, a slice,
    a list or tensor of positions) copies out only the rows asked for, so what training holds
    resident does not grow with the corpus."""

    def __init__(self, shards: list[torch.Tensor]):
        self.shards = shards
        lengths = torch.tensor([len(shard) for shard in shards])
        self.ends = lengths.cumsum(0)
        self.starts = self.ends - lengths
        self.shape = torch.Size((int(self.ends[-1]), shards[0].shape[1]))
        self.dtype = shards[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif isinstance(index, torch.Tensor) and index.dtype == torch.bool:  # a mask, as a tensor would take it
            index = index.nonzero().squeeze(1)
        positions = torch.as_tensor(index, dtype=torch.long)
        flat = positions.reshape(-1)
        flat = torch.where(flat < 0, flat + len(self), flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} vectors")
        shard_of = torch.bucketize(flat, self.ends, right=True)
        rows = flat - self.starts[shard_of]
        out = torch.empty(len(flat), self.shape[1], dtype=self.dtype)
        for shard in shard_of.unique().tolist():
            where = (shard_of == shard).nonzero().squeeze(1)
            out[where] = self.shards[shard][rows[where]]
        return out.reshape(*positions.shape, self.shape[1])

    def tensor(self) -> torch.Tensor:
        """All the vectors, copied into one tensor."""
        return torch.cat(self.shards)


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
    """The texts' vectors through the embedding cache, as one tensor in memory."""
    return mapped_text_vectors(encoder, texts, progress).tensor()


def mapped_text_vectors(encoder: ClipEncoder, texts: Sequence[str], progress: bool = True) -> CachedVectors:
    """The texts' vectors through the embedding cache, read where they lie (training's way: its memory
    does not grow with the corpus)."""
    with simple_progress("encoding text", len(texts), enabled=progress) as bar:
        task = bar.add_task("encoding text", total=len(texts))
        return EmbeddingCache(encoder).view(texts, progress=lambda done, total: bar.update(task, completed=done))


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
