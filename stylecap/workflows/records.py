"""Where caption records go: JSONL/CSV output files, the terminal table and the HTML gallery.

A record is a dict with the fields :data:`FIELDS`: ``path``, ``caption``, ``score``, ``model`` and
``error`` (empty on success; on failure ``caption`` and ``score`` are empty and ``error`` says why).
Every destination has ``write(records)`` (called once per batch) and ``close()``.

In memory ``path`` is the path as given (``str``, possibly holding a name's non-UTF-8 bytes as
surrogates). An output file stores it absolute, so a resumed run finds it from any working folder,
as text with such bytes written ``\\xNN``, plus :data:`PATH_BYTES` (the exact bytes, base64) when
that text is not exact; reading the file gives the exact path back.
"""
from __future__ import annotations

import base64
import binascii
import csv
import html
import itertools
import json
import os
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from rich.markup import escape

from stylecap.core.images import file_key, is_exact_text, path_text
from stylecap.errors import InputError, UsageError, printable

FIELDS = ("path", "caption", "score", "model", "error")
PATH_BYTES = "path_b64"  # the exact bytes of a path that is not UTF-8, base64 (absent or empty otherwise)
CSV_FIELDS = FIELDS + (PATH_BYTES,)
OUTPUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
TABLE_ROWS = 50  # at most this many rows go into the terminal table; longer runs stream lines


class OutputFile:
    """A JSONL or CSV file of records (by extension), appended and flushed per batch; read back to resume."""

    def __init__(self, path: Path, resume: bool = False):
        self.path = Path(path)
        self.kind = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.kind is None:
            raise UsageError(f"unknown output format '{self.path.suffix}'", f"--out {self.path}",
                             "name the file .jsonl or .csv")
        if self.path.is_file() and self.path.stat().st_size > 0 and not resume:
            raise UsageError("output file already exists", f"--out {self.path}",
                             "pass --resume to continue it, or choose another file")
        self.handle = self.writer = None

    def done_keys(self) -> set[str]:
        """Files that already have a record (captioned or failed), by :func:`file_key`: a resumed
        run skips them however they are spelled this time."""
        return {file_key(record["path"]) for record in self.read()}

    def read(self) -> Iterator[dict]:
        """Records already in the file; a half-written last line (from a kill) is dropped first."""
        if not self.path.is_file():
            return
        drop_partial_line(self.path)
        with open(self.path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            if self.kind == "csv":
                reader = csv.DictReader(handle)
                for record in reader:
                    yield self._checked(record, reader.line_num)
                return
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield self._checked(self._parse(line, number), number)

    def _parse(self, line: str, number: int) -> dict:
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"output file has a malformed line: {exc.msg}", f"{self.path}:{number}",
                             "fix or remove that line, then resume") from exc

    def _checked(self, record, number: int) -> dict:
        """The record as in memory (its exact path restored), or a one-line error naming the line."""
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise InputError("output file has a record without 'path'", f"{self.path}:{number}",
                             "resume only into a file written by `stylecap caption`")
        try:
            if record.get(PATH_BYTES):
                record["path"] = os.fsdecode(base64.b64decode(record.pop(PATH_BYTES), validate=True))
            os.fsencode(record["path"])  # a name the file system can hold (not so a hand-written "\ud800")
        except (binascii.Error, TypeError, ValueError) as exc:
            raise InputError("output file has a record whose path is no file name", f"{self.path}:{number}",
                             "fix or remove that line, then resume") from exc
        return record

    def write(self, records: list[dict]) -> None:
        if self.handle is None:
            self._open()
        stored = [stored_record(r) for r in records]
        if self.kind == "csv":
            self.writer.writerows(stored)
        else:
            self.handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in stored)
        self.handle.flush()  # a kill loses at most the batch in flight

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        columns = CSV_FIELDS if new or self.kind != "csv" else self._csv_header()
        self.handle = open(self.path, "a", encoding="utf-8", newline="")
        if self.kind == "csv":
            self.writer = csv.DictWriter(self.handle, columns, extrasaction="ignore")
            if new:
                self.writer.writeheader()

    def _csv_header(self) -> list[str]:
        """The columns of the CSV being resumed, so appended rows line up with its header (a file
        written before ``path_b64`` existed keeps its five columns)."""
        with open(self.path, encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), None) or list(CSV_FIELDS)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def stored_record(record: dict) -> dict:
    """A record as an output file holds it: the path absolute, as text; its exact bytes in
    :data:`PATH_BYTES` when the text cannot hold them (a name that is not UTF-8)."""
    path = os.path.abspath(record["path"])
    stored = {name: record.get(name) for name in FIELDS} | {"path": path_text(path)}
    if not is_exact_text(path):
        stored[PATH_BYTES] = base64.b64encode(os.fsencode(path)).decode("ascii")
    return stored


def shown_path(path: str) -> str:
    """A path as a terminal may show it: text, with control characters escaped."""
    return printable(path_text(path))


def drop_partial_line(path: Path) -> None:
    """Cut a file back to its last complete line, so appended records never glue onto a torn one."""
    with open(path, "rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            step = min(65536, position)
            handle.seek(position - step)
            cut = handle.read(step).rfind(b"\n")
            if cut >= 0:
                position = position - step + cut + 1
                break
            position -= step
        if position != end:
            handle.truncate(position)


class TerminalTable:
    """Captions in a table on stdout for small runs; beyond :data:`TABLE_ROWS`, one tab-separated line
    per caption (pipe-friendly), unless an output file already keeps them."""

    def __init__(self, console, stream_overflow: bool):
        self.console, self.stream_overflow = console, stream_overflow
        self.rows: list[dict] | None = []

    def write(self, records: list[dict]) -> None:
        if self.rows is not None:
            self.rows += records
            if len(self.rows) <= TABLE_ROWS:
                return
            records, self.rows = self.rows, None
        if self.stream_overflow:
            for r in records:
                text = f"FAILED: {r['error']}" if r["error"] else r["caption"]
                # raw, to keep the tabs; a tab or newline inside a name or caption is escaped
                self.console.file.write(f"{shown_path(r['path'])}\t{printable(text)}\t{score_text(r)}\n")

    def close(self) -> None:
        if not self.rows:
            return
        from rich.table import Table

        table = Table("image", "caption", "score")
        for r in self.rows:
            caption = f"[red]failed: {escape(printable(r['error']))}[/]" if r["error"] else escape(printable(r["caption"]))
            table.add_row(escape(shown_path(r["path"])), caption, score_text(r))
        self.console.print(table)


def score_text(record: dict) -> str:
    return "" if record.get("score") in (None, "") else f"{float(record['score']):.3f}"


# ----------------------------------------------------------------------------- HTML gallery

PAGE_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8" />
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; background: #fafafa; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 1rem; }}
figure {{ margin: 0; background: white; border-radius: 6px; box-shadow: 0 1px 3px #0002; overflow: hidden; }}
img {{ width: 100%; height: 200px; object-fit: cover; display: block; background: #eee; }}
figcaption {{ padding: .5rem .7rem; font-size: .9rem; }}
figcaption ol {{ margin: .3rem 0 0; padding-left: 1.2rem; }}
.path {{ color: #777; font-size: .75rem; word-break: break-all; }}
.score {{ color: #999; font-size: .75rem; }}
.failed {{ border: 2px solid #d33; }}
.failed .reason {{ color: #b00; }}
</style>
</head>
<body>
<h1>{title}</h1>
<main>
"""
PAGE_FOOT = "</main>\n</body>\n</html>\n"


class Gallery:
    """An HTML page of thumbnails and captions that a browser opens from disk.

    Images are referenced by paths relative to the page (lazy-loaded), not copied. Written as records
    arrive to ``FILE.part`` and renamed on close, so an interrupted run never leaves half a page.
    The markup is also well-formed XML, so tools can parse it strictly.
    """

    def __init__(self, path: Path, title: str = "stylecap captions"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.part = self.path.with_name(self.path.name + ".part")
        self.handle = open(self.part, "w", encoding="utf-8")
        self.handle.write(PAGE_HEAD.format(title=html.escape(title)))

    def write(self, records: list[dict]) -> None:
        for path, group in itertools.groupby(records, key=lambda r: r["path"]):
            self.handle.write(self._figure(path, list(group)))

    def _figure(self, path: str, records: list[dict]) -> str:
        label = f'<div class="path">{html.escape(path_text(path))}</div>'
        failed = [r for r in records if r["error"]]
        if failed:  # no <img>: the file may be damaged or a decompression bomb
            reason = html.escape(failed[0]["error"])
            return f'<figure class="failed"><figcaption>{label}<div class="reason">{reason}</div></figcaption></figure>\n'
        items = "".join(f'<li>{html.escape(r["caption"])} <span class="score">{score_text(r)}</span></li>'
                        for r in records)
        alt = html.escape(records[0]["caption"], quote=True)
        return (f'<figure><img src="{self._src(path)}" alt="{alt}" loading="lazy" />'
                f"<figcaption><ol>{items}</ol>{label}</figcaption></figure>\n")

    def _src(self, path: str) -> str:
        relative = os.path.relpath(Path(path).resolve(), self.path.parent.resolve())
        return html.escape(quote(os.fsencode(Path(relative).as_posix())), quote=True)  # a name's exact bytes

    def close(self) -> None:
        self.handle.write(PAGE_FOOT)
        self.handle.close()
        self.part.replace(self.path)
