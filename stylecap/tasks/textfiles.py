"""Reading plain text and JSONL sentence files, with one-line errors that name the file and line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from stylecap.errors import InputError

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
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc.msg}", f"{path}:{number}",
                                 "fix or delete that line") from None
            text = next((record[f] for f in fields if isinstance(record, dict) and isinstance(record.get(f), str)), None)
            if not text or not text.strip():
                raise InputError(f"record has no text field ({' / '.join(fields)})", f"{path}:{number}",
                                 "add one of those fields")
            yield str(record.get("id", f"{path.stem}:{number}")), text.strip()
