"""Caption images with a trained model: the CLIP image vector takes the text vector's place."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from stylecap.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Decoding:
    num_beams: int | None = None
    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    num_return_sequences: int = 1


def find_images(paths: Iterable[Path]) -> list[Path]:
    """Image files among ``paths``, folders searched recursively, in a stable order."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise InputError("no such file or folder", str(path), "check the path")
    return found


def caption_images(paths: Iterable[Path], model_dir: Path, decoding: Decoding | None = None,
                   input_text: str | None = None, batch_size: int = 32) -> list[dict]:
    """[{path, caption, score, model}] for each image (all captions when several are asked for)."""
    from stylecap.encoders import load_clip
    from stylecap.model import load_model

    decoding = decoding or Decoding()
    model = load_model(model_dir)
    encoder = load_clip(model.config.clip)
    images = find_images(paths)
    results = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        vecs = encoder.encode_images(chunk)
        outputs = model.generate(vecs, [input_text] * len(chunk) if input_text else None, **vars(decoding))
        for path, captions in zip(chunk, outputs):
            for text, score in captions:
                results.append({"path": str(path), "caption": text, "score": round(score, 4), "model": str(model_dir)})
    return results
