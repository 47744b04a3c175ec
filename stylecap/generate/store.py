"""A corpus folder that survives `kill -9`.

    DIR/raw/shard-00000.ndjson   every accepted sentence, appended as it is generated
    DIR/raw/inputs.ndjson        the manifest of inputs: one line per finished (or failed) input
    DIR/raw/judged/              what the corpus-level filters remember (see judge.py)
    DIR/shard-00000.jsonl ...    the corpus: raw records after the corpus-level filters
    DIR/manifest.json            settings, totals and the filter report of the last run

An input's records go to the raw shard in one write, then its manifest line in another. On resume,
a torn last line is cut off and records whose input never reached the manifest are dropped (that
input runs again), so nothing is lost and nothing is written twice. The corpus shards grow from the
raw ones at the end of every run: each raw record is judged once (judge.py). Only `*.jsonl` files
hold training records; everything else uses other names so a reader can glob the folder.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from stylecap.errors import InputError, UsageError

SHARD_RECORDS = 100_000  # records per corpus shard
COMMIT_RECORDS = 10_000  # records of one input written at a time
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
        self.done, self.failed, self.skipped = _journal(self.folder, repair=True)
        shards = self._raw_shards()
        if shards:  # only the last raw shard is ever appended to
            _drop_unfinished(shards[-1], self.done)

    def _raw_shards(self) -> list[Path]:
        return sorted(self.raw.glob("shard-*.ndjson"))

    def commit(self, key: str, records: Iterable[dict], failure: str | None = None,
               skipped: str | None = None) -> int:
        """Record one finished input: its records first, then its manifest line; returns how many
        records. A `skipped` input (it can never give sentences) counts as finished, with its
        reason kept. Records may come as a stream (a whole book's): they are written in pieces,
        all to one raw shard, and if the stream fails what it wrote is cut off again."""
        count = 0
        shard = self._current_shard()
        size = shard.stat().st_size if shard.exists() else 0
        try:
            for chunk in _pieces(records, COMMIT_RECORDS):
                _append(shard, "".join(_line(r) for r in chunk))
                count += len(chunk)
        except BaseException:
            if shard.exists():
                os.truncate(shard, size)
            raise
        status = "failed" if failure else "skipped" if skipped else "done"
        entry = {"key": key, "status": status, "records": count}
        if failure:
            entry["reason"] = failure
            self.failed[key] = failure
        else:
            self.done.add(key)
            self.failed.pop(key, None)
            self.skipped.pop(key, None)
            if skipped:
                entry["reason"] = self.skipped[key] = skipped
        _append(self.raw / "inputs.ndjson", _line(entry))
        return count

    def _current_shard(self) -> Path:
        shards = self._raw_shards()
        if shards and shards[-1].stat().st_size < RAW_SHARD_BYTES:
            return shards[-1]
        return self.raw / f"shard-{len(shards):05d}.ndjson"

    def raw_records(self) -> Iterator[dict]:
        for shard in self._raw_shards():
            yield from _read_lines(shard)

    def write_manifest(self, summary: dict) -> None:
        _write_atomic(self.folder / "manifest.json", json.dumps(summary, indent=1))

    def close(self) -> None:
        self._lock.close()


def _pieces(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(records)
    while piece := list(islice(iterator, size)):
        yield piece


def _drop_unfinished(shard: Path, done: set[str]) -> None:
    """Cut off a torn last line, and the records at the end of `shard` whose input never reached
    the manifest of inputs (written, then killed before its manifest line): that input runs again.
    Read line by line, so a shard of any size costs little memory."""
    cut, clean = None, True
    for offset, record in _lines_at(shard, repair=True):
        finished = record["provenance"]["input"] in done
        if not finished and cut is None:
            cut = offset
        clean = clean and (finished == (cut is None))
    if cut is None:
        return
    if clean:  # the unfinished records are the shard's tail, as `commit` leaves them
        with open(shard, "r+b") as handle:
            handle.truncate(cut)
    else:
        _write_atomic(shard, "".join(_line(r) for r in _read_lines(shard) if r["provenance"]["input"] in done))


def finished_inputs(folder: str | Path) -> set[str]:
    """Keys of the inputs a corpus folder has finished (read only: for estimates)."""
    return _journal(Path(folder), repair=False)[0]


def _journal(folder: Path, repair: bool) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """(finished keys, failed key -> reason, skipped key -> reason) from the manifest of inputs;
    the last word counts. Skipped inputs are finished too."""
    done: set[str] = set()
    failed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for entry in _read_lines(folder / "raw" / "inputs.ndjson", repair=repair):
        if entry["status"] in ("done", "skipped"):
            done.add(entry["key"])
            failed.pop(entry["key"], None)
            skipped.pop(entry["key"], None)
            if entry["status"] == "skipped":
                skipped[entry["key"]] = entry.get("reason", "")
        else:
            failed[entry["key"]] = entry.get("reason", "")
    return done, failed, skipped


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
    for _, record in _lines_at(path, repair):
        yield record


def _lines_at(path: Path, repair: bool = False) -> Iterator[tuple[int, dict]]:
    """(byte offset, record) for each JSON line of `path`, read as a stream."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        offset = 0
        for number, line in enumerate(handle, 1):
            if not line.endswith(b"\n"):
                if repair:
                    with open(path, "r+b") as writable:
                        writable.truncate(offset)
                return
            if line.strip():
                try:
                    yield offset, json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise InputError("not a JSON line", f"{path}:{number}",
                                     "fix or remove that line") from None
            offset += len(line)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
