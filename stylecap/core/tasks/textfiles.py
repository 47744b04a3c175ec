"""Reading plain text and JSONL sentence files, with one-line errors that name the file and line."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from stylecap.errors import InputError, first_line
from stylecap.paths import cache_root

TEXT_FIELDS = ("text", "caption", "sentence", "raw")


def require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} not found", str(path), "check the path")
    return path


def iter_sentences(path: Path, fields: tuple[str, ...] = TEXT_FIELDS) -> Iterator[tuple[str, str]]:
    """(id, text) pairs from a ``.txt`` file (one sentence a line) or ``.jsonl`` (a text field a record)."""
    path = require_file(path, "data file")
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path, fields)
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield f"{path.stem}:{number}", line.strip()


def _iter_jsonl(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for number, record in _json_lines(path):
        if record is None:
            raise InputError("malformed JSON", f"{path}:{number}", "fix or delete that line")
        text = next((record[f] for f in fields if isinstance(record, dict) and isinstance(record.get(f), str)), None)
        if not text or not text.strip():
            raise InputError(f"record has no text field ({' / '.join(fields)})", f"{path}:{number}",
                             "add one of those fields")
        yield str(record.get("id", f"{path.stem}:{number}")), text.strip()


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value or None when the line is not JSON) for each non-blank line."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError:
                    yield number, None


# Above this size a JSON file is read through `datasets` (Arrow, memory-mapped) instead of json.load,
# so a dataset file of hundreds of MB does not become Python objects all at once.
ARROW_THRESHOLD = 64 << 20


def json_records(path: Path, field: str | None = None) -> Iterable[dict]:
    """The records of a JSON file: the list under ``field`` (or the top-level list)."""
    path = require_file(path, "data file")
    if path.stat().st_size > ARROW_THRESHOLD:
        return _arrow_records(path, field)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON: {exc}", str(path), "check the file is complete") from None
    records = data.get(field) if field and isinstance(data, dict) else data
    if not isinstance(records, list):
        raise InputError(f"expected a list of records{f' under {field!r}' if field else ''}", str(path),
                         "check this is the right kind of file")
    return records


def _arrow_records(path: Path, field: str | None) -> Iterable[dict]:
    import datasets


    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset("json", data_files=str(path), field=field, split="train",
                                      cache_dir=str(cache_root() / "datasets"))
    except Exception as exc:  # pyarrow/datasets raise many kinds for a malformed file
        raise InputError(f"could not read the JSON file: {first_line(exc, 200)}", str(path),
                         "check the file is complete") from None
    return table  # iterates as dicts, one row at a time, from the memory-mapped table


def jsonl_records(path: Path, skipped: Counter) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each JSON object line; malformed lines are skipped and counted."""
    for number, record in _json_lines(require_file(path, "data file")):
        if isinstance(record, dict):
            yield number, record
        else:
            skipped["malformed lines"] += 1
