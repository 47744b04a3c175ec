"""Caption folders of images with a trained model: the CLIP image vector takes the text vector's place.

Streaming from end to end, so a folder of 100k photos costs no more memory than a folder of ten:
a lazy, sorted folder walk → DataLoader workers that decode, orient and resize (a bad file becomes a
failure record with its reason, never a crash) → batched CLIP encoding and generation (bf16 on GPU)
→ records appended and flushed once per batch, so ``--resume`` after a kill loses at most the batch
that was in flight.

Records (see :mod:`stylecap.records`) have the fields ``path``, ``caption``, ``score``, ``model``
and ``error``; with ``--num-captions K`` an image gets K records, best first.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.markup import escape
from rich.text import Text

from stylecap.errors import EXIT_OK, EXIT_PARTIAL, InputError, ModelError, UsageError
from stylecap.records import Gallery, OutputFile, TerminalTable

if TYPE_CHECKING:
    import torch

    from stylecap.encoders import ClipEncoder
    from stylecap.model import CloseModel

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
# Pillow's own hard limit (twice its warning threshold): far above any camera, far below a bomb.
DEFAULT_MAX_PIXELS = 178_956_970
SHOWN_FAILURES = 20  # failures printed one by one; the rest are only in the output file
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
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"corrupt or truncated image: {detail}") from exc


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


class _Batches:
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
    loader = DataLoader(decoder, batch_sampler=_Batches(items, batch_size), num_workers=workers,
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


# ----------------------------------------------------------------------------- the model side

@dataclass
class Decoding:
    """How captions are decoded; None means the model's saved default."""

    num_beams: int | None = None
    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    num_return_sequences: int = 1

    def check(self) -> None:
        if self.temperature <= 0:
            raise UsageError("temperature must be above 0", "--temperature", "use e.g. 0.7 or 1.0")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError("top-p must be in (0, 1]", "--top-p", "use e.g. 0.9")

    def generate_kwargs(self, default_beams: int = 1) -> dict:
        """Arguments for ``CloseModel.generate``; beam search keeps at least as many beams as captions."""
        self.check()
        kwargs = vars(self).copy()
        if not self.do_sample:
            kwargs["num_beams"] = max(self.num_beams or default_beams, self.num_return_sequences)
        return kwargs


# Task → the option that carries its input text, with an example for error messages.
TASK_INPUTS = {"vqa": ("question", '"what is the man holding?"'), "ve": ("hypothesis", '"two dogs play outside"'),
               "news": ("context", "article.txt")}
TEXTLESS_TASKS = {"caption", "style"}


@dataclass
class TaskInput:
    """Text a non-captioning model reads after the image: a question, a hypothesis or an article."""

    question: str | None = None
    hypothesis: str | None = None
    context: Path | None = None  # a file holding the article

    def text_for(self, task: str) -> str | None:
        """The input text for a model of ``task``, checked against what that task reads."""
        given = {name: value for name, value in vars(self).items() if value is not None}
        expected, example = TASK_INPUTS.get(task, (None, None))
        reads = f"--{expected}" if expected else "no input text"
        if len(given) > 1:
            raise UsageError("give only one of --question, --hypothesis, --context", None,
                             f"this {task} model reads {reads}")
        if expected and not given:
            raise UsageError(f"this is a {task} model: it needs --{expected}", None, f"e.g. --{expected} {example}")
        name = next(iter(given), None)
        if name and (task in TEXTLESS_TASKS or (expected and name != expected)):
            raise UsageError(f"--{name} does not apply to this {task} model", None, f"it reads {reads}")
        if name == "context":
            if not Path(self.context).is_file():
                raise InputError("context file not found", str(self.context), "pass the article as a text file")
            return Path(self.context).read_text(encoding="utf-8", errors="replace").strip()
        return given.get(name) if name else None


class Captioner:
    """A model and its CLIP, loaded once and kept on the fastest device (bf16 LM where supported)."""

    def __init__(self, model: "CloseModel", encoder: "ClipEncoder", name: str = ""):
        from stylecap.encoders import autocast_dtype

        self.model, self.encoder, self.name = model.to(encoder.device).eval(), encoder, name
        dtype = autocast_dtype(encoder.device)
        if dtype is not None:
            self.model.lm.to(dtype)  # the mapper stays fp32; its output is cast to the LM's dtype

    @classmethod
    def load(cls, model_dir: Path | None, device: str | None = None) -> "Captioner":
        from stylecap.encoders import load_clip
        from stylecap.model import load_model

        folder = resolve_model_dir(model_dir)
        model = load_model(folder)
        return cls(model, load_clip(model.config.clip, device), str(model_dir))

    @property
    def task(self) -> str:
        return self.model.config.task

    def caption(self, vectors: "torch.Tensor", decoding: Decoding,
                input_text: str | None = None) -> list[list[tuple[str, float]]]:
        kwargs = decoding.generate_kwargs(self.model.config.generation.get("num_beams", 1))
        texts = [input_text] * len(vectors) if input_text else None
        return self.model.generate(vectors, texts, **kwargs)

    def records(self, batch: ImageBatch, decoding: Decoding, input_text: str | None = None) -> list[dict]:
        """Output records for a batch: one per caption of each loaded image, one per failure."""
        captions = self.caption(batch.vectors, decoding, input_text) if batch.paths else []
        rows = [{"path": path, "caption": text, "score": round(float(score), 4), "model": self.name, "error": ""}
                for path, options in zip(batch.paths, captions) for text, score in options]
        return rows + [failure_record(f, self.name) for f in batch.failures]


def failure_record(failure: Failure, model: str) -> dict:
    return {"path": failure.path, "caption": "", "score": None, "model": model, "error": failure.reason}


def resolve_model_dir(model_dir: Path | None) -> Path:
    """The model folder; a training run folder (holding ``model/``) is accepted too."""
    if model_dir is None:
        raise ModelError("no model given", "--model",
                         "train one with `stylecap train --data captions.txt --out runs/mine` and pass "
                         "--model runs/mine/model (or set STYLECAP_MODEL)")
    folder = Path(model_dir)
    if (folder / "model" / "stylecap.json").is_file() and not (folder / "stylecap.json").exists():
        return folder / "model"
    return folder


# ----------------------------------------------------------------------------- the run

@dataclass
class Loading:
    """How images are read: batch size, decoding processes, the decompression-bomb limit, the device."""

    batch_size: int = 32
    num_workers: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    device: str | None = None


@dataclass
class CaptionReport:
    images: int = 0  # images captioned in this run
    failed: int = 0  # inputs that failed in this run (each has a record with its reason)
    skipped: int = 0  # already in the output file (--resume)
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)  # the first few, for the summary

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def summary(self) -> str:
        rate = self.images / self.seconds if self.seconds else 0.0
        parts = [f"captioned {self.images} image{'s' * (self.images != 1)}"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.skipped:
            parts.append(f"{self.skipped} already done")
        return ", ".join(parts) + f" in {self.seconds:.1f} s ({rate:.1f} images/s)"


def caption_images(paths: Iterable[Path], model_dir: Path | None, decoding: Decoding | None = None,
                   inputs: TaskInput | None = None, out: Path | None = None, html: Path | None = None,
                   resume: bool = False, loading: Loading | None = None, progress: bool = True,
                   table: bool = True) -> CaptionReport:
    """Caption every image under ``paths``; records go to ``out`` (JSONL/CSV), ``html`` and the terminal.

    Bad files are recorded as failures and the run goes on; the report's ``exit_code`` is
    ``EXIT_PARTIAL`` when any failed. With ``resume``, images already in ``out`` are skipped.
    """
    from stylecap.progress import console

    decoding, loading = decoding or Decoding(), loading or Loading()
    decoding.check()  # before any work
    paths = check_paths(paths)
    if resume and out is None:
        raise UsageError("--resume needs --out", "--resume", "pass the output file of the run to continue")
    output = OutputFile(out, resume) if out else None
    done = output.done_paths() if output and resume else set()
    walked = find_images(paths)
    first = next(walked, None)
    if first is None:
        raise InputError("no images found", ", ".join(map(str, paths)),
                         f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))}")
    captioner = Captioner.load(model_dir, loading.device)
    input_text = (inputs or TaskInput()).text_for(captioner.task)
    report = CaptionReport()
    todo = _not_done(itertools.chain([first], walked), done, report)
    sinks = [s for s in (output, _gallery(html, output if resume else None)) if s]
    if table:
        sinks.append(TerminalTable(_stdout(), stream_overflow=output is None))
    try:
        with _CaptionProgress(paths, done, progress) as bar:
            caption_stream(captioner, todo, decoding, sinks, loading, input_text, report, bar.advance)
    finally:
        for sink in sinks:
            sink.close()
    console.print(report.summary() + (f"; records in {out}" if out else ""), highlight=False)
    return report


def caption_stream(captioner: Captioner, items: Iterable[Path | Failure], decoding: Decoding, sinks: list,
                   loading: Loading | None = None, input_text: str | None = None,
                   report: CaptionReport | None = None, advance=None) -> CaptionReport:
    """The captioning loop: batches of image vectors → records → every sink (``write(records)``)."""
    loading, report = loading or Loading(), report or CaptionReport()
    start = time.perf_counter()
    try:
        for batch in iter_image_vectors(captioner.encoder, items, loading.batch_size, loading.num_workers,
                                        loading.max_pixels):
            records = captioner.records(batch, decoding, input_text)
            for sink in sinks:
                sink.write(records)
            _count(report, batch)
            if advance:
                advance(len(batch.paths) + len(batch.failures))
    finally:
        report.seconds += time.perf_counter() - start
    return report


def _not_done(items: Iterator[Path | Failure], done: set[str], report: CaptionReport) -> Iterator[Path | Failure]:
    for item in items:
        if _key(item) in done:
            report.skipped += 1
        else:
            yield item


def _key(item: Path | Failure) -> str:
    """How an input is named in output records (and so matched on --resume)."""
    return item.path if isinstance(item, Failure) else str(item)


def _count(report: CaptionReport, batch: ImageBatch) -> None:
    from stylecap.progress import console

    report.images += len(batch.paths)
    report.failed += len(batch.failures)
    for failure in batch.failures:
        if len(report.failures) < SHOWN_FAILURES:
            report.failures.append(failure)
            console.print(f"[yellow]failed:[/] {escape(failure.path)}: {escape(failure.reason)}", highlight=False)
        elif len(report.failures) == SHOWN_FAILURES:
            report.failures.append(failure)
            console.print("[yellow]further failures are recorded but not shown here[/]")


def _gallery(html: Path | None, previous: OutputFile | None):
    if html is None:
        return None
    gallery = Gallery(html)
    if previous is not None:  # a resumed run's page shows the earlier records too
        for chunk in _Batches(previous.read(), 256):
            gallery.write(chunk)
    return gallery


def _stdout():
    from rich.console import Console

    return Console(soft_wrap=True)


class _CaptionProgress:
    """Images done, images/s and (once a background walk has counted them) the total and ETA."""

    def __init__(self, paths: list[Path], done: set[str], enabled: bool):
        from stylecap.progress import console

        self.progress = Progress(TextColumn("[bold]captioning"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled)
        self.task = self.progress.add_task("captioning", total=None)
        self.enabled, self.paths, self.done = enabled, paths, done

    def __enter__(self):
        self.progress.__enter__()
        if self.enabled:
            threading.Thread(target=self._count, daemon=True).start()
        return self

    def _count(self) -> None:
        total = sum(1 for item in find_images(self.paths) if _key(item) not in self.done)
        self.progress.update(self.task, total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        rate = task.speed or (task.completed / task.elapsed if task.elapsed else 0.0)  # recent, else average
        return Text(f"{rate:.1f} images/s")
