"""Reading seed captions, subjects and reviews from the files people have."""
from __future__ import annotations

import contextlib
import csv
import json
from pathlib import Path

from stylecap.errors import InputError

# File suffixes that `datasets` reads, and the builder that reads each.
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
CAPTION_COLUMNS = ("caption", "text", "sentence")
_KINDS = {".csv": "CSV", ".tsv": "TSV", ".json": "JSON", ".jsonl": "JSON Lines", ".parquet": "Parquet"}


def read_lines(path: str | Path) -> list[tuple[str, str]]:
    """(line number, text) for every non-empty line of a text file."""
    path = existing_file(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [(str(number), line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def read_captions(path: str | Path, column: str | None = None) -> list[tuple[str, str]]:
    """(seed id, caption) from a text file (one per line), a COCO captions file, or any table
    `datasets` reads (the `column`, else the first of caption/text/sentence)."""
    path = existing_file(path)
    if path.suffix not in _BUILDERS:
        return read_lines(path)
    if path.suffix == ".json" and (coco := _coco_captions(path)) is not None:
        return coco
    table = load_table(path)
    column = column or next((c for c in CAPTION_COLUMNS if c in table.column_names), CAPTION_COLUMNS[0])
    require_columns(path, table.column_names, [column])
    ids = table["id"] if "id" in table.column_names else range(len(table))
    return [(str(i), str(text).strip()) for i, text in zip(ids, table[column], strict=True)
            if text and str(text).strip()]


def load_table(path: str | Path):
    """A CSV/TSV/JSON/JSONL/Parquet file as a `datasets.Dataset` (Arrow, memory-mapped)."""
    path = existing_file(path)
    builder = _BUILDERS.get(path.suffix)
    if builder is None:
        raise InputError(f"cannot read {path.suffix or 'this'} files as a table", str(path),
                         f"use one of {', '.join(_BUILDERS)}")
    import datasets

    datasets.disable_progress_bars()
    options = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    try:
        with _datasets_silent():
            return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for a bad file
        what, fix = _cause(path, exc)
        raise InputError(f"cannot read the table: {what}", str(path), fix) from None


@contextlib.contextmanager
def _datasets_silent():
    """datasets logs a failed read as an ERROR line of its own; the InputError we raise says it
    better, in one line, so nothing of datasets' reaches the terminal meanwhile."""
    import datasets

    before = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 1)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(before)


def _cause(path: Path, exc: Exception) -> tuple[str, str]:
    """(what is wrong, what to do) for a table datasets could not read, in a user's terms: text
    that is not UTF-8, the first ragged row or broken JSON line, else the innermost error."""
    finder = {".jsonl": _bad_json_line, ".csv": _ragged_row, ".tsv": _ragged_row}.get(path.suffix)
    if finder:
        try:
            found = finder(path)
        except UnicodeDecodeError as bad:
            return (f"not UTF-8 text (byte 0x{bad.object[bad.start]:02x} at offset {bad.start:,})",
                    "save the file as UTF-8")
        except (OSError, csv.Error):
            found = None
        if found:
            return found, "fix that line"
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    innermost = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return innermost, f"check that it is a valid {_KINDS[path.suffix]} file"


def _ragged_row(path: Path) -> str | None:
    """'line 4 has 5 fields, expected 3' for the first row longer than the header."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        header = next((row for row in rows if row), None)
        for row in rows:
            if header is not None and len(row) > len(header):
                return f"line {rows.line_num} has {len(row)} fields, expected {len(header)}"
    return None


def _bad_json_line(path: Path) -> str | None:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {number} is not valid JSON ({exc.msg})"
    return None


def require_columns(path: str | Path, present: list[str], wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise InputError(f"column {missing[0]!r} not found", str(path),
                         f"columns are: {', '.join(present)}; choose one with the column options")


def _coco_captions(path: Path) -> list[tuple[str, str]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        return [(str(a.get("id", i)), a["caption"].strip())
                for i, a in enumerate(data["annotations"]) if a.get("caption")]
    if isinstance(data, list) and all(isinstance(item, str) for item in data):
        return [(str(i), item.strip()) for i, item in enumerate(data) if item.strip()]
    return None


def existing_file(path: str | Path) -> Path:
    """`path` as a Path, or a clear error if there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("input file not found", str(path), "check the --input path")
    return path
