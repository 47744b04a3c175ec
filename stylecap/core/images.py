"""Finding and decoding image files: a lazy, sorted folder walk; robust decoding (EXIF rotation,
transparency over white, first frame, 16-bit scaled, decompression-bomb guard) where a bad file
becomes a :class:`Failure` with its reason, never a crash; and CLIP vectors for a stream of files,
decoded in DataLoader worker processes ahead of the encoder.
"""
from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

from stylecap.errors import InputError, first_line

if TYPE_CHECKING:
    import torch

    from stylecap.core.encoders import ClipEncoder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
# Pillow's own hard limit (twice its warning threshold): far above any camera, far below a bomb.
DEFAULT_MAX_PIXELS = 178_956_970
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Failure:
    """An input that produced no caption, and why (a reason a person can act on)."""

    path: str
    reason: str


# ----------------------------------------------------------------------------- finding images

def check_paths(paths: Iterable[Path]) -> list[Path]:
    """The command-line paths, each checked to exist (a typo should stop the run before any work)."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise InputError("no such file or folder", str(path), "check the path")
    return paths


def find_images(paths: Iterable[Path]) -> Iterator[Path | Failure]:
    """Image files among ``paths``, walked lazily: folders recursively, sorted per folder.

    Files named explicitly are tried whatever their suffix; inside folders only image suffixes count.
    Unreadable folders and broken symbolic links are yielded as :class:`Failure` records.
    """
    seen: set[tuple[int, int]] = set()  # folders already walked, so symlink loops end
    for path in map(Path, paths):
        if path.is_dir():
            yield from _walk(path, seen)
        else:
            yield path


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path | Failure]:
    try:
        stat = folder.stat()
        if (stat.st_dev, stat.st_ino) in seen:
            return
        seen.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as entries:
            entries = sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        yield Failure(str(folder), f"cannot read folder: {_os_reason(exc)}")
        return
    for entry in entries:
        path = Path(entry.path)
        if _is_dir(entry):
            yield from _walk(path, seen)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if entry.is_symlink() and not path.exists():
                yield Failure(str(path), "broken symbolic link")
            else:
                yield path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks to folders
    except OSError:
        return False


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()


# ----------------------------------------------------------------------------- loading images

class ImageError(Exception):
    """An image file that cannot be used; the message is the reason recorded for it."""


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None):
    """Open an image as RGB the way a person sees it: EXIF orientation applied, transparency over white,
    GIF/TIFF first frame, 16-bit scaled to 8-bit. ``draft`` lets JPEGs decode at a reduced scale that
    still covers ``draft`` pixels a side (much faster for large photos). Raises :class:`ImageError`.
    """
    from PIL import Image

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageError("empty file (0 bytes)")
        # Pillow warns between its limit and twice it; here any image over max_pixels is refused.
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    if draft:
                        image.draft("RGB", (draft, draft))
                    image.load()
                    return _to_rgb(image)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"too many pixels for the decompression-bomb guard (limit {max_pixels:,}); "
                         "if it is a real image, raise --max-pixels") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageError("not an image, or a format Pillow cannot read") from exc
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        raise ImageError(_os_reason(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many kinds on damaged files
        raise ImageError(f"corrupt or truncated image: {first_line(exc, 160)}") from exc


def _to_rgb(image):
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit greyscale: keep the tones, not a clipped white
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if image.has_transparency_data:  # RGBA, LA, palette or colour-key transparency
        background = Image.new("RGBA", image.size, WHITE + (255,))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


class _Decoder:
    """Decode + preprocess one item; runs in DataLoader workers (picklable, no model inside)."""

    def __init__(self, preprocess, max_pixels: int, draft: int | None):
        self.preprocess, self.max_pixels, self.draft = preprocess, max_pixels, draft

    def __getitem__(self, item: Path | Failure):
        if isinstance(item, Failure):
            return item
        try:
            return str(item), self.preprocess(load_image(item, self.max_pixels, self.draft))
        except ImageError as exc:
            return Failure(str(item), str(exc))


def _collate(items: list) -> tuple[list[str], "torch.Tensor | None", list[Failure]]:
    import torch

    good = [item for item in items if not isinstance(item, Failure)]
    failures = [item for item in items if isinstance(item, Failure)]
    pixels = torch.stack([pixels for _, pixels in good]) if good else None
    return [path for path, _ in good], pixels, failures


class LazyBatches:
    """Lists of ``size`` items drawn lazily from an iterator: the DataLoader's batch sampler."""

    def __init__(self, items: Iterable, size: int):
        self.items, self.size = iter(items), size

    def __iter__(self):
        while batch := list(itertools.islice(self.items, self.size)):
            yield batch


class ImageBatch(NamedTuple):
    paths: list[str]  # images that loaded, in the order of ``vectors``
    vectors: "torch.Tensor"  # [len(paths), D], L2-normalised, float32, cpu
    failures: list[Failure]


def default_workers() -> int:
    """Decoding processes: all cores but one for the main process, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def iter_image_vectors(encoder: "ClipEncoder", items: Iterable[Path | Failure], batch_size: int = 32,
                       num_workers: int | None = None,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[ImageBatch]:
    """CLIP vectors for a stream of image paths, batch by batch, with the files that failed and why.

    Decoding and resizing run in ``num_workers`` DataLoader processes (default :func:`default_workers`),
    ahead of the encoder; ``items`` is consumed lazily, so it may be a generator over millions of files.
    On CPU, the main process uses only the cores the workers leave free while the generator runs.
    :class:`Failure` items (e.g. from :func:`find_images`) pass through into the batch's failures.
    """
    import torch
    from torch.utils.data import DataLoader

    workers = default_workers() if num_workers is None else num_workers
    decoder = _Decoder(encoder.preprocess, max_pixels, _draft_size(encoder))
    loader = DataLoader(decoder, batch_sampler=LazyBatches(items, batch_size), num_workers=workers,
                        collate_fn=_collate, pin_memory=encoder.device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    threads = torch.get_num_threads()
    if encoder.device.type == "cpu" and workers:
        # Workers and compute threads share the cores; oversubscribed math threads spin and stall.
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - workers)))
    try:
        for paths, pixels, failures in loader:
            vectors = encoder.encode_image_batch(pixels) if paths else torch.empty(0, encoder.dim)
            yield ImageBatch(paths, vectors, failures)
    finally:
        torch.set_num_threads(threads)


def _draft_size(encoder: "ClipEncoder") -> int:
    """Twice the CLIP input size: JPEGs decode at reduced scale yet still downsample with antialiasing."""
    size = getattr(encoder.model.visual, "image_size", 224)
    return 2 * max(size if isinstance(size, (tuple, list)) else (size,))
