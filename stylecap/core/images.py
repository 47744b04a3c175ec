"""Finding and decoding image files: a lazy, sorted folder walk; robust decoding (EXIF rotation,
transparency over white, first frame, 16-bit scaled, decompression-bomb guard) where a bad file
becomes a :class:`Failure` with its reason, never a crash; and CLIP vectors for a stream of files,
decoded in DataLoader worker processes ahead of the encoder.
"""
from __future__ import annotations

import itertools
import math
import os
import stat
import sys
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


# ----------------------------------------------------------------------------- naming files
# A path is bytes on Linux and need not be UTF-8; Python holds the bytes that are not as lone
# surrogates (os.fsdecode), which no text file or terminal accepts. These helpers keep the exact
# path for opening files and give a text form for records and messages.

def file_key(path: str | Path) -> str:
    """What identifies a file however it is spelled (``a.png``, ``./a.png``, absolute, through a
    symbolic link, from another working folder): its absolute path with every link resolved."""
    return os.path.realpath(path)


def path_text(path: str | Path) -> str:
    """A path as text that can be written anywhere: bytes that are not UTF-8 become ``\\xNN``."""
    return _path_bytes(path).decode("utf-8", "backslashreplace")


def is_exact_text(path: str | Path) -> bool:
    """Whether :func:`path_text` gives the path back exactly (false for names that are not UTF-8)."""
    try:
        os.fsencode(path).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return False
    return True


def _path_bytes(path: str | Path) -> bytes:
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate no file name holds (hand-edited text): shown, not raised
        return os.fspath(path).encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------- finding images

def check_paths(paths: Iterable[Path]) -> list[Path]:
    """The command-line paths, each checked to exist and be readable (a typo or a locked folder
    should stop the run before any work): exit 3 with the path and the reason."""
    paths = [Path(p) for p in paths]
    for path in paths:
        _check_reachable(path)
    return paths


def _check_reachable(path: Path) -> None:
    try:
        folder = stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError("no such file or folder", str(path), "check the path") from None
    except OSError as exc:  # a folder on the way that the user may not enter, a symbolic-link loop …
        raise InputError(f"cannot reach it: {_os_reason(exc)}", str(path),
                         "check the permissions of it and of the folders above it") from None
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        raise InputError(f"cannot read this {'folder' if folder else 'file'}: permission denied", str(path),
                         "check its permissions")


def find_images(paths: Iterable[Path]) -> Iterator[Path | Failure]:
    """Image files among ``paths``, walked lazily: folders recursively, sorted per folder.

    Files named explicitly are tried whatever their suffix; inside folders only image suffixes count.
    A file reached twice (named twice, inside a folder also named, spelled differently, through a
    link) is yielded once, as first spelled. Unreadable folders and broken symbolic links are
    yielded as :class:`Failure` records.
    """
    walked: set[tuple[int, int]] = set()  # folders already walked, so symlink loops end
    yielded: set[str] = set()  # file_key of every item so far
    for path in map(Path, paths):
        items = _walk(path, walked) if is_folder(path) else [(path, file_key(path))]
        for item, key in items:
            if key not in yielded:
                yielded.add(key)
                yield item


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[tuple[Path | Failure, str]]:
    """(item, its file_key) for each image under ``folder``."""
    try:
        info = folder.stat()
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        real = file_key(folder)  # once per folder: an entry that is no link lies right inside it
        with os.scandir(folder) as entries:
            entries = sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        yield Failure(str(folder), f"cannot read folder: {_os_reason(exc)}"), file_key(folder)
        return
    for entry in entries:
        path = Path(entry.path)
        if _is_dir(entry):
            yield from _walk(path, seen)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            link = entry.is_symlink()
            key = file_key(path) if link else os.path.join(real, entry.name)
            yield (Failure(str(path), "broken symbolic link") if link and not os.path.exists(path) else path), key


def is_folder(path: str | Path) -> bool:
    """Like ``Path.is_dir``, but False where the path cannot be looked at (a folder on the way that
    the user may not enter): ``Path.is_dir`` raises PermissionError there before Python 3.12."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def is_file(path: str | Path) -> bool:
    """Like ``Path.is_file``, but False where the path cannot be looked at (see :func:`is_folder`)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


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
    except OSError as exc:
        if exc.errno is None:  # Pillow's own OSErrors ("image file is truncated") carry no errno
            raise ImageError(f"corrupt or truncated image: {first_line(exc, 160)}") from exc
        raise ImageError(_os_reason(exc)) from exc  # permission denied, a folder, gone since the walk …
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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Decoding processes: this process's share of the cores but one (for the process itself), at most
    8. Under ``torchrun`` / ``accelerate launch`` the processes on one machine share its cores
    (``LOCAL_WORLD_SIZE``, set by the launcher), so each takes its share, not all of them."""
    try:
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    except ValueError:  # not set by a launcher we know: one process
        local_processes = 1
    return max(0, min(8, usable_cores() // local_processes - 1))


def worker_count(requested: int | None, items: Iterator, batch_size: int) -> tuple[int, Iterator]:
    """Decoding processes for this work: as requested (default :func:`default_workers`), but never
    more than the cores, nor than the batches there are to decode (each worker decodes whole
    batches, so a process more would only start and wait). Looks ahead in ``items`` at most one
    batch per worker, and returns the same items, untouched, for the caller to consume."""
    workers = min(default_workers() if requested is None else requested, usable_cores())
    ahead = list(itertools.islice(items, workers * batch_size))
    return min(workers, math.ceil(len(ahead) / batch_size)), itertools.chain(ahead, items)


def iter_image_vectors(encoder: "ClipEncoder", items: Iterable[Path | Failure], batch_size: int = 32,
                       num_workers: int | None = None,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[ImageBatch]:
    """CLIP vectors for a stream of image paths, batch by batch, with the files that failed and why.

    Decoding and resizing run in ``num_workers`` DataLoader processes (default :func:`default_workers`;
    at most one per core and per batch, :func:`worker_count`), ahead of the encoder; ``items`` is
    consumed lazily, so it may be a generator over millions of files.
    On CPU, the main process uses only the cores the workers leave free while the generator runs.
    :class:`Failure` items (e.g. from :func:`find_images`) pass through into the batch's failures.
    """
    import torch
    from torch.utils.data import DataLoader

    workers, items = worker_count(num_workers, iter(items), batch_size)
    decoder = _Decoder(encoder.preprocess, max_pixels, _draft_size(encoder))
    loader = DataLoader(decoder, batch_sampler=LazyBatches(items, batch_size), num_workers=workers,
                        collate_fn=_collate, pin_memory=encoder.device.type == "cuda",
                        prefetch_factor=4 if workers else None, worker_init_fn=_quiet_when_left if workers else None)
    threads = torch.get_num_threads()
    if encoder.device.type == "cpu" and workers:
        # Workers and compute threads share the cores; oversubscribed math threads spin and stall.
        torch.set_num_threads(max(1, min(threads, usable_cores() - workers)))
    try:
        for paths, pixels, failures in loader:
            vectors = encoder.encode_image_batch(pixels) if paths else torch.empty(0, encoder.dim)
            yield ImageBatch(paths, vectors, failures)
    finally:
        torch.set_num_threads(threads)


def _quiet_when_left(worker_id: int) -> None:
    """In a decoding process. It hands batches to the main process over a connection of its own; when
    the main process stops mid-handover (Ctrl-C, a kill), that connection breaks in a background
    thread, which would print a traceback under the one-line "interrupted" message. Nothing is lost
    there (the batch was never recorded), so that break is not reported; anything else still is."""
    import multiprocessing

    report = sys.excepthook

    def hook(kind, value, traceback):
        if not issubclass(kind, (EOFError, OSError, multiprocessing.AuthenticationError)):
            report(kind, value, traceback)

    sys.excepthook = hook


def _draft_size(encoder: "ClipEncoder") -> int:
    """Twice the CLIP input size: JPEGs decode at reduced scale yet still downsample with antialiasing."""
    size = getattr(encoder.model.visual, "image_size", 224)
    return 2 * max(size if isinstance(size, (tuple, list)) else (size,))
