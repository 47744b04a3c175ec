"""A corpus folder that survives `kill -9`.

    DIR/raw/shard-00000.ndjson   every accepted sentence, appended as it is generated
    DIR/raw/inputs.ndjson        the manifest of inputs: one line per finished (or failed) input
    DIR/shard-00000.jsonl ...    the corpus: raw records after the corpus-level filters
    DIR/manifest.json            settings, totals and the filter report of the last run

An input's records go to the raw shard in one write, then its manifest line in another. On resume,
a torn last line is cut off and records whose input never reached the manifest are dropped (that
input runs again), so nothing is lost and nothing is written twice. The corpus shards are derived
from the raw ones, so they are rebuilt whole at the end of every run. Only `*.jsonl` files hold
training records; everything else uses other names so a reader can glob the folder.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from stylecap.errors import InputError, UsageError

SHARD_RECORDS = 100_000  # records per corpus shard
RAW_SHARD_BYTES = 64 << 20  # a raw shard rolls over past this size


class CorpusStore:
    def __init__(self, folder: str | Path, identity: dict):
        """Open (or create) a corpus folder for `identity` (style and source): a folder is one corpus."""
        self.folder = Path(folder)
        self.raw = self.folder / "raw"
        self.raw.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.folder / ".lock")
        self._check_identity(identity)
        self._recover()

    def _check_identity(self, identity: dict) -> None:
        path = self.raw / "identity.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != identity:
                raise UsageError(f"{self.folder} already holds a corpus for {old}, not {identity}",
                                 fix="choose another --out folder")
        else:
            _write_atomic(path, json.dumps(identity, indent=1))

    def _recover(self) -> None:
        self.done, self.failed = _journal(self.folder, repair=True)
        for shard in self._raw_shards():
            records = list(_read_lines(shard, repair=True))
            kept = [r for r in records if r["provenance"]["input"] in self.done]
            if len(kept) < len(records):  # written, but the input never reached the manifest
                _write_atomic(shard, "".join(_line(r) for r in kept))

    def _raw_shards(self) -> list[Path]:
        return sorted(self.raw.glob("shard-*.ndjson"))

    def commit(self, key: str, records: list[dict], failure: str | None = None) -> None:
        """Record one finished input: its records first, then its manifest line."""
        if records:
            _append(self._current_shard(), "".join(_line(r) for r in records))
        entry = {"key": key, "status": "failed" if failure else "done", "records": len(records)}
        if failure:
            entry["reason"] = failure
            self.failed[key] = failure
        else:
            self.done.add(key)
            self.failed.pop(key, None)
        _append(self.raw / "inputs.ndjson", _line(entry))

    def _current_shard(self) -> Path:
        shards = self._raw_shards()
        if shards and shards[-1].stat().st_size < RAW_SHARD_BYTES:
            return shards[-1]
        return self.raw / f"shard-{len(shards):05d}.ndjson"

    def raw_records(self) -> Iterator[dict]:
        for shard in self._raw_shards():
            yield from _read_lines(shard)

    def write_corpus(self, records: list[dict], summary: dict) -> None:
        """Replace the corpus shards with `records` and write the manifest."""
        names = []
        for start in range(0, max(len(records), 1), SHARD_RECORDS):
            name = f"shard-{len(names):05d}.jsonl"
            _write_atomic(self.folder / name, "".join(_line(r) for r in records[start:start + SHARD_RECORDS]))
            names.append(name)
        for stale in sorted(self.folder.glob("shard-*.jsonl"))[len(names):]:
            stale.unlink()
        summary = {**summary, "shards": names, "records": len(records)}
        _write_atomic(self.folder / "manifest.json", json.dumps(summary, indent=1))

    def close(self) -> None:
        self._lock.close()


def finished_inputs(folder: str | Path) -> set[str]:
    """Keys of the inputs a corpus folder has finished (read only: for estimates)."""
    return _journal(Path(folder), repair=False)[0]


def _journal(folder: Path, repair: bool) -> tuple[set[str], dict[str, str]]:
    """(finished keys, failed key -> reason) from the manifest of inputs; the last word counts."""
    done: set[str] = set()
    failed: dict[str, str] = {}
    for entry in _read_lines(folder / "raw" / "inputs.ndjson", repair=repair):
        if entry["status"] == "done":
            done.add(entry["key"])
            failed.pop(entry["key"], None)
        else:
            failed[entry["key"]] = entry.get("reason", "")
    return done, failed


def iter_corpus_records(folder: str | Path) -> Iterator[dict]:
    """Every record of a corpus folder: the `*.jsonl` files directly inside it, in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("corpus folder not found", str(folder), "run `stylecap generate` first")
    for path in sorted(folder.glob("*.jsonl")):
        for number, record in enumerate(_read_lines(path), 1):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise InputError("corpus record has no text field", f"{path}:{number}")
            yield record


def read_corpus_texts(folder: str | Path) -> list[str]:
    """The `text` of every record in a corpus folder (what `train --task style` learns from)."""
    return [record["text"] for record in iter_corpus_records(folder)]


def _lock(path: Path):
    handle = open(path, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UsageError("another `stylecap generate` is writing to this folder", str(path.parent),
                         "wait for it to finish or choose another --out") from None
    return handle


def _line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _append(path: Path, text: str) -> None:
    # One unbuffered write per call: the kernel has the whole batch before the next one starts.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def _read_lines(path: Path, repair: bool = False) -> Iterator[dict]:
    """The JSON lines of `path`, less a torn last line (a write cut short), which `repair` removes
    from the file."""
    if not path.exists():
        return
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if repair and len(complete) < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    for number, line in enumerate(complete.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise InputError("not a JSON line", f"{path}:{number}",
                                 "fix or remove that line") from None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
