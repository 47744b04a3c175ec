"""Reading plain text and JSONL sentence files, with one-line errors that name the file and line."""
from __future__ import annotations

import contextlib
import json
import os
import stat
from collections import Counter
from pathlib import Path
from typing import Iterator

import ijson

from stylecap.errors import InputError, first_line

TEXT_FIELDS = ("text", "caption", "sentence", "raw")


def require_file(path: Path, what: str) -> Path:
    """``path``, checked to be a file this process can read: else one line naming it (exit 3)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{what} not found", str(path), "check the path") from None
    except OSError as exc:  # a folder on the way that the user may not enter, a symbolic-link loop …
        raise InputError(f"cannot reach the {what}: {(exc.strerror or type(exc).__name__).lower()}", str(path),
                         "check the permissions of it and of the folders above it") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"the {what} is a folder, not a file", str(path), "pass the file itself")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read the {what}: permission denied", str(path), "check its permissions")
    return path


# Fields that give another task's data away, so a file given to the wrong task gets a line naming
# the right one instead of a list of fields it lacks: (format, fields a record has, task).
OTHER_FORMATS = (
    ("SNLI-VE", ("Flickr30K_ID", "sentence2"), "ve"),
    ("SNLI", ("sentence1", "sentence2"), "ve"),
    ("VQA questions", ("question", "question_id"), "vqa"),
    ("VQA annotations", ("answers", "question_id"), "vqa"),
    ("Visual News", ("article_path",), "news"),
)


def other_task_error(record, where: str) -> InputError | None:
    """An error saying which task reads ``record``, when its fields give that away."""
    if not isinstance(record, dict):
        return None
    for name, fields, task in OTHER_FORMATS:
        if all(f in record for f in fields):
            return InputError(f"this looks like {name}: use --task {task}", where,
                              f"`stylecap eval` takes it with a model trained for {task}")
    return None


def iter_sentences(path: Path, fields: tuple[str, ...] = TEXT_FIELDS) -> Iterator[tuple[str, str]]:
    """(id, text) pairs from a ``.txt`` file (one sentence a line) or ``.jsonl`` (a text field a record)."""
    path = require_file(path, "data file")
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path, fields)
        return
    for number, line in _text_lines(path):
        if line.strip():
            yield f"{path.stem}:{number}", line.strip()


def _iter_jsonl(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for number, record in _json_lines(path):
        if record is None:
            raise InputError("malformed JSON", f"{path}:{number}", "fix or delete that line")
        text = next((record[f] for f in fields if isinstance(record, dict) and isinstance(record.get(f), str)), None)
        if not text or not text.strip():
            raise other_task_error(record, f"{path}:{number}") or InputError(
                f"record has no text field ({' / '.join(fields)})", f"{path}:{number}", "add one of those fields")
        yield str(record.get("id", f"{path.stem}:{number}")), text.strip()


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file (a byte-order mark is dropped); a line that is not
    UTF-8 is one error naming it, never a decoding traceback."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"line {number} is not UTF-8 text (byte {exc.start + 1} of the line)",
                                 f"{path}:{number}", "save the file as UTF-8") from None
            yield number, line


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed value or None when the line is not JSON) for each non-blank line."""
    for number, line in _text_lines(path):
        if line.strip():
            yield number, _parse_json(line)


def _parse_json(text: str) -> object:
    """The JSON value, or None. Besides malformed JSON, ``json`` raises ValueError for a number of
    more than 4,300 digits and RecursionError for deep nesting: malformed input all the same."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def json_records(path: Path, field: str | None = None) -> Iterator:
    """The records of a JSON file: the list under ``field`` (or the top-level list), parsed one record
    at a time, so the memory a read takes does not grow with the file."""
    return _records(require_file(path, "data file"), field)


def _records(path: Path, field: str | None) -> Iterator:
    found = yield from _json_items(path, f"{field}.item" if field else "item")
    if found:
        return
    shape = _top_level_shape(path)  # no record: say why, as a parse of the whole file would
    if shape == "list" and field:  # a bare list where a list under ``field`` was expected is read as it
        yield from _json_items(path, "item")
    elif shape != "list" and not (isinstance(shape, dict) and field and shape.get(field) == "list"):
        skeleton = {key: [] if kind == "list" else None for key, kind in shape.items()} if isinstance(shape, dict) else None
        raise _other_task_file(skeleton, str(path)) or InputError(
            f"expected a list of records{f' under {field!r}' if field else ''}", str(path),
            "check this is the right kind of file")


def _json_items(path: Path, prefix: str) -> Iterator:
    """The values at ``prefix`` (ijson's path syntax); returns how many there were."""
    count = 0
    with _json_errors(path), open(path, "rb") as handle:
        for count, item in enumerate(ijson.items(handle, prefix, use_float=True), 1):
            yield item
    return count


def _top_level_shape(path: Path) -> str | dict | None:
    """"list" for a top-level list; for an object, {key: "list" or "other"}; None for a bare value."""
    shape: dict[str, str] = {}
    key = None
    with _json_errors(path), open(path, "rb") as handle:
        for prefix, event, value in ijson.parse(handle):
            if prefix == "" and event == "start_array":
                return "list"
            if prefix == "" and event == "map_key":
                key = value
            elif key is not None:  # the first event of a top-level key's value says what it is
                shape[key], key = "list" if event == "start_array" else "other", None
            elif prefix == "" and event not in ("start_map", "end_map"):
                return None
    return shape


@contextlib.contextmanager
def _json_errors(path: Path):
    """Bad JSON, or bytes that are not UTF-8, is one error naming the file, wherever the parser meets it."""
    try:
        yield
    except (ijson.JSONError, UnicodeDecodeError, RecursionError) as exc:
        # the C parser's messages are bytes holding a piece of the file: decoded, the first line only
        message = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InputError(f"not valid JSON: {first_line(message, 200)}", str(path),
                         "check the file is complete (NaN, Infinity and integers beyond 64 bits are not JSON)") from None


def _other_task_file(data, where: str) -> InputError | None:
    """Which task reads a JSON file whose top level gives it away (VQA's question and answer files)."""
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        return other_task_error({"question": 1, "question_id": 1}, where)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list) and "images" not in data:
        return other_task_error({"answers": 1, "question_id": 1}, where)
    return None


def jsonl_records(path: Path, skipped: Counter) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each JSON object line; malformed lines are skipped and counted."""
    for number, record in _json_lines(require_file(path, "data file")):
        if isinstance(record, dict):
            yield number, record
        else:
            skipped["malformed lines"] += 1
