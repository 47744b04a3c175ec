"""Caption folders of images with a trained model: the CLIP image vector takes the text vector's place.

Streaming from end to end, so a folder of 100k photos costs no more memory than a folder of ten:
a lazy, sorted folder walk → DataLoader workers that decode, orient and resize (a bad file becomes a
failure record with its reason, never a crash) → batched CLIP encoding and generation (bf16 on GPU)
→ records appended and flushed once per batch, so ``--resume`` after a kill loses at most the batch
that was in flight.

Records (see :mod:`stylecap.workflows.records`) have the fields ``path``, ``caption``, ``score``, ``model``
and ``error``; with ``--num-captions K`` an image gets K records, best first.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from stylecap.core.encoders import autocast_dtype, load_clip
from stylecap.core.images import (
    IMAGE_SUFFIXES,
    Failure,
    ImageBatch,
    LazyBatches,
    check_paths,
    file_key,
    find_images,
    iter_image_vectors,
)
from stylecap.core.model import load_model
from stylecap.core.rerank import check_rerank, generate_reranked
from stylecap.errors import EXIT_OK, EXIT_PARTIAL, InputError, Interrupted, ModelError, UsageError, printable
from stylecap.options import Decoding, Loading
from stylecap.progress import console
from stylecap.workflows.records import Gallery, OutputFile, TerminalTable, shown_path
from stylecap.workflows.shards import ProcessGroup, Ranks, Shards

if TYPE_CHECKING:
    import torch

    from stylecap.core.encoders import ClipEncoder
    from stylecap.core.model import CloseModel

SHOWN_FAILURES = 20  # failures printed one by one; the rest are only in the output file
# Where an LM has no position limit (T5's relative positions): the length T5 was pretrained on.
UNBOUNDED_LM_TOKENS = 512


# ----------------------------------------------------------------------------- the model side

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
        self.model, self.encoder, self.name = model.to(encoder.device).eval(), encoder, name
        dtype = autocast_dtype(encoder.device)
        if dtype is not None:
            self.model.lm.to(dtype)  # the mapper stays fp32; its output is cast to the LM's dtype

    @classmethod
    def load(cls, model_dir: Path | None, device: str | None = None) -> "Captioner":
        folder = resolve_model_dir(model_dir)
        model = load_model(folder)
        return cls(model, load_clip(model.config.clip, device), str(model_dir))

    @property
    def task(self) -> str:
        return self.model.config.task

    def token_limit(self) -> int:
        """The most tokens a caption can have: the LM's position limit, less what comes before the
        caption in those positions (a decoder-only LM reads the prefix and the input text there)."""
        lm = self.model.lm.config
        positions = next((getattr(lm, name) for name in ("n_positions", "max_position_embeddings", "n_ctx")
                          if isinstance(getattr(lm, name, None), int)), None)
        if positions is None:
            return UNBOUNDED_LM_TOKENS
        if self.model.is_seq2seq:  # the decoder's positions hold the caption alone
            return positions
        return max(1, positions - self.model.config.prefix_len - self.model.config.max_input_len)

    def check(self, decoding: Decoding) -> None:
        """Decoding options that only this model can judge, checked before any image is decoded."""
        limit = self.token_limit()
        if decoding.max_new_tokens is not None and decoding.max_new_tokens > limit:
            raise UsageError(f"--max-length {decoding.max_new_tokens} is beyond this model's limit of {limit} tokens",
                             None, f"its captions were trained at up to {self.model.config.max_target_len}")
        check_rerank(decoding.rerank, self.task)

    def caption(self, vectors: "torch.Tensor", decoding: Decoding,
                input_text: str | None = None) -> list[list[tuple[str, float]]]:
        kwargs = decoding.generate_kwargs(self.model.config.generation.get("num_beams", 1))
        texts = [input_text] * len(vectors) if input_text else None
        if decoding.rerank:
            return generate_reranked(self.model, self.encoder, vectors, texts, decoding.num_return_sequences, **kwargs)
        return self.model.generate(vectors, texts, **kwargs)

    def records(self, batch: ImageBatch, decoding: Decoding, input_text: str | None = None) -> list[dict]:
        """Output records for a batch: one per caption of each loaded image, one per failure."""
        captions = self.caption(batch.vectors, decoding, input_text) if batch.paths else []
        rows = [{"path": path, "caption": text, "score": round(float(score), 4), "model": self.name, "error": ""}
                for path, options in zip(batch.paths, captions, strict=True) for text, score in options]
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
class CaptionReport:
    images: int = 0  # images captioned in this run
    failed: int = 0  # inputs that failed in this run (each has a record with its reason)
    skipped: int = 0  # already in the output file (--resume)
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)  # the first few, for the summary
    main: bool = True  # false in the other processes of a run launched in several: the first speaks for all

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
    decoding, loading = decoding or Decoding(), loading or Loading()
    decoding.check()  # before any work
    paths = check_paths(paths)
    if resume and out is None:
        raise UsageError("--resume needs --out", "--resume", "pass the output file of the run to continue")
    ranks = Ranks.from_env()
    if ranks.many:
        return _caption_share(ranks, paths, model_dir, decoding, inputs, out, html, resume, loading, progress)
    output = OutputFile(out, resume) if out else None
    if output:
        Shards(output).take_over(resume)
    done = output.done_keys() if output and resume else set()
    job, items = _Job.start(paths, model_dir, decoding, inputs, loading)
    report = CaptionReport()
    todo = _not_done(items, done, report)
    sinks = [s for s in (output, _gallery(html, output if resume else None)) if s]
    if table:
        sinks.append(TerminalTable(_stdout(), stream_overflow=output is None))
    job.run(todo, sinks, _CaptionProgress(paths, done, progress), report, out)
    # soft_wrap: a long path stays one line, whatever the terminal's width
    console.print(Text(report.summary() + (f"; records in {shown_path(str(out))}" if out else "")), soft_wrap=True)
    return report


@dataclass
class _Job:
    """What every image of a run is captioned with: loaded once the inputs are known to hold images."""

    captioner: Captioner
    decoding: Decoding
    loading: Loading
    input_text: str | None

    @classmethod
    def start(cls, paths: list[Path], model_dir: Path | None, decoding: Decoding, inputs: TaskInput | None,
              loading: Loading) -> tuple["_Job", Iterator[Path | Failure]]:
        """The job and every input, walked lazily (only the first is looked at here)."""
        walked = find_images(paths)
        first = next(walked, None)
        if first is None:
            raise InputError("no images found", ", ".join(map(str, paths)),
                             f"image files end in {', '.join(sorted(IMAGE_SUFFIXES))}")
        captioner = Captioner.load(model_dir, loading.device)
        captioner.check(decoding)
        input_text = (inputs or TaskInput()).text_for(captioner.task)
        return cls(captioner, decoding, loading, input_text), itertools.chain([first], walked)

    def run(self, todo: Iterable[Path | Failure], sinks: list, bar: "_CaptionProgress", report: CaptionReport,
            records_in: Path | None) -> None:
        """Caption ``todo`` into ``sinks``; on Ctrl-C, say how to continue the records in ``records_in``."""
        try:
            with bar:
                caption_stream(self.captioner, todo, self.decoding, sinks, self.loading, self.input_text, report,
                               bar.advance)
        except KeyboardInterrupt:
            raise Interrupted(_resume_advice(records_in)) from None
        finally:
            for sink in sinks:
                sink.close()


def _caption_share(ranks: Ranks, paths: list[Path], model_dir: Path | None, decoding: Decoding,
                   inputs: TaskInput | None, out: Path | None, html: Path | None, resume: bool, loading: Loading,
                   progress: bool) -> CaptionReport:
    """This process's share of a run launched in several (:mod:`stylecap.workflows.shards`): the files
    no process has done, every ``size``-th from its rank on, into its own shard; the first process
    merges the shards into ``out`` (and writes ``html`` from it) once all have finished."""
    if out is None:
        raise UsageError(f"captioning in {ranks.size} processes needs --out", None,
                         "each process writes its records next to that file, and they are merged into it")
    shards = Shards(OutputFile(out, resume))
    shards.check(resume)
    done = shards.done_keys() if resume else set()
    job, items = _Job.start(paths, model_dir, decoding, inputs, replace(loading, device=ranks.device(loading.device)))
    report, mine = CaptionReport(), shards.path(ranks)
    with ProcessGroup() as group:
        group.barrier()  # every process has read what is done before any process writes
        bar = _CaptionProgress(paths, done, progress and ranks.first, ranks.share)
        job.run(ranks.share(_not_done(items, done, report)), [OutputFile(mine, resume=True)], bar, report, out)
        console.print(Text(f"process {ranks.rank} of {ranks.size}: {report.summary()}"), soft_wrap=True)
        total = _combined(group.gather(report))
        if ranks.first:
            _merge(shards, html, total)
        group.barrier()  # none ends before the merge: a launcher stops them all when one ends with an error
    total.main = ranks.first
    return total


def _combined(reports: list[CaptionReport]) -> CaptionReport:
    """The run's report from its processes' (each skipped the same files already done)."""
    failures = [failure for report in reports for failure in report.failures]
    return CaptionReport(images=sum(r.images for r in reports), failed=sum(r.failed for r in reports),
                         skipped=reports[0].skipped, seconds=max(r.seconds for r in reports),
                         failures=failures[:SHOWN_FAILURES])


def _merge(shards: Shards, html: Path | None, total: CaptionReport) -> None:
    shards.merge()
    gallery = _gallery(html, shards.out)
    if gallery:
        gallery.close()
    console.print(Text(f"all processes: {total.summary()}; records in {shown_path(str(shards.out.path))}"),
                  soft_wrap=True)


def _resume_advice(out: Path | None) -> str:
    """What Ctrl-C tells the user: a rerun needs --resume to continue the same output file."""
    if out is None:
        return "no records were kept (no --out); run again with --out FILE to keep them as they are made"
    return (f"the records made so far are in {shown_path(str(out))}; add --resume to the same command "
            "to caption the rest")


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
        if done and _key(item) in done:
            report.skipped += 1
        else:
            yield item


def _key(item: Path | Failure) -> str:
    """How an input is matched against output records on --resume: the file, however spelled."""
    return file_key(item.path if isinstance(item, Failure) else item)


def _count(report: CaptionReport, batch: ImageBatch) -> None:
    report.images += len(batch.paths)
    report.failed += len(batch.failures)
    for failure in batch.failures:
        if len(report.failures) < SHOWN_FAILURES:
            report.failures.append(failure)
            console.print(f"[yellow]failed:[/] {escape(shown_path(failure.path))}: {escape(printable(failure.reason))}",
                          highlight=False, soft_wrap=True)
        elif len(report.failures) == SHOWN_FAILURES:
            report.failures.append(failure)
            console.print("[yellow]further failures are recorded but not shown here[/]")


def _gallery(html: Path | None, previous: OutputFile | None):
    if html is None:
        return None
    gallery = Gallery(html)
    if previous is not None:  # a resumed run's page shows the earlier records too
        for chunk in LazyBatches(previous.read(), 256):
            gallery.write(chunk)
    return gallery


def _stdout():
    from rich.console import Console

    return Console(soft_wrap=True)


class _CaptionProgress:
    """Images done, images/s and (once a background walk has counted them) the total and ETA."""

    def __init__(self, paths: list[Path], done: set[str], enabled: bool, share=iter):
        self.progress = Progress(TextColumn("[bold]captioning"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled)
        self.task = self.progress.add_task("captioning", total=None)
        self.enabled, self.paths, self.done = enabled, paths, done
        self.share = share  # this process's part of the files left (in a run of one process: all of them)

    def __enter__(self):
        self.progress.__enter__()
        if self.enabled:
            threading.Thread(target=self._count, daemon=True).start()
        return self

    def _count(self) -> None:
        todo = (item for item in find_images(self.paths) if not (self.done and _key(item) in self.done))
        total = sum(1 for _ in self.share(todo))
        self.progress.update(self.task, total=total)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        rate = task.speed or (task.completed / task.elapsed if task.elapsed else 0.0)  # recent, else average
        return Text(f"{rate:.1f} images/s")
