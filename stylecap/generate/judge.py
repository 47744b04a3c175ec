"""The corpus pass of a corpus folder: the corpus-level filters judge each raw record once, in the
order records reached the raw log, however many runs that takes.

    DIR/raw/judged/state.json        where judging stopped, how long every file below and every
                                     corpus shard was then, and the tallies
    DIR/raw/judged/<part>.log        the filters' memory (see CorpusFilter), appended as it grows
    DIR/raw/judged/sketch-N.npz      the n-gram count sketch at checkpoint N

Survivors are appended to the corpus shards (`DIR/shard-*.jsonl`) batch by batch. A checkpoint
appends the filters' new memory, writes a new sketch, and only then replaces state.json. A run
killed at any moment restarts from the last checkpoint: the logs and the corpus shards are cut back
to the lengths it names and the records after it are judged again. Judging is deterministic and
does not depend on batch boundaries, so they get the same verdicts: nothing is lost, nothing is
written twice, and a corpus built across kills equals one built in one go.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stylecap.errors import InputError
from stylecap.generate.filters import BATCH, LOGGED, SKETCH_SHAPE, CorpusFilter
from stylecap.generate.store import SHARD_RECORDS, CorpusStore, _write_atomic
from stylecap.generate.styles import Filters

_VERSION = 1
_STATE = "state.json"


@dataclasses.dataclass
class PassResult:
    raw_records: int  # raw records judged, in all runs
    records: int  # records in the corpus
    dropped: dict[str, int]  # by reason, in all runs
    shards: list[str]  # the corpus shard files
    judged_now: int  # raw records judged by this call
    seconds: float
    rejudged: bool  # the saved state did not fit (new filter settings): everything was judged anew


def judge_corpus(store: CorpusStore, filters: Filters, *, checkpoint_records: int = 250_000,
                 checkpoint_seconds: float = 60.0, batch: int = BATCH) -> PassResult:
    """Judge the raw records of `store` that no earlier pass judged; append the survivors to the
    corpus shards. Checkpoints every `checkpoint_records` raw records or `checkpoint_seconds`,
    whichever comes first, and at the end."""
    started = time.monotonic()
    folder = store.folder / "raw" / "judged"
    state, judge, rejudged = _resume(store, folder, filters)
    corpus = _CorpusWriter(store.folder, state["corpus"])
    tally = Counter(state["dropped"])
    judged_now, since_checkpoint, last_checkpoint = 0, 0, time.monotonic()
    for lines, position in _raw_batches(store.raw, state["raw"], batch):
        records = _parse(lines, store.raw / position[0])
        verdicts = judge.judge(records)
        corpus.write([line for line, verdict in zip(lines, verdicts, strict=True) if verdict is None])
        tally.update(verdict for verdict in verdicts if verdict is not None)
        state["raw"] = position
        state["raw_records"] += len(lines)
        judged_now += len(lines)
        since_checkpoint += len(lines)
        if since_checkpoint >= checkpoint_records or time.monotonic() - last_checkpoint >= checkpoint_seconds:
            _checkpoint(folder, state, judge, corpus, tally)
            since_checkpoint, last_checkpoint = 0, time.monotonic()
    _checkpoint(folder, state, judge, corpus, tally)
    return PassResult(raw_records=state["raw_records"], records=state["records"], dropped=dict(tally),
                      shards=corpus.names(), judged_now=judged_now,
                      seconds=round(time.monotonic() - started, 2), rejudged=rejudged)


def _settings(filters: Filters) -> dict:
    """The settings a saved state was judged with: if they change, earlier verdicts do not hold."""
    return {"near_duplicate": filters.near_duplicate, "ngram_sizes": list(filters.ngram_sizes),
            "ngram_min_count": filters.ngram_min_count, "ngram_scale": filters.ngram_scale,
            "ngram_reference_records": filters.ngram_reference_records}


def _resume(store: CorpusStore, folder: Path, filters: Filters) -> tuple[dict, CorpusFilter, bool]:
    """The last checkpoint's state and filters, with every file cut back to it; or a fresh start
    (no corpus shards) when there is none or it does not fit the settings or the raw log."""
    state = _read_state(folder)
    fits = (state is not None and state.get("version") == _VERSION and state["filters"] == _settings(filters)
            and _raw_position_exists(store.raw, state["raw"]))
    if not fits:
        _start_afresh(store.folder, folder)
        fresh = {"version": _VERSION, "filters": _settings(filters), "raw": [None, 0], "raw_records": 0,
                 "records": 0, "dropped": {}, "corpus": {"shards": 1, "bytes": 0, "records": 0},
                 "logs": {name: 0 for name in LOGGED}, "sketch": None, "checkpoint": 0}
        return fresh, CorpusFilter(filters, log=True), state is not None
    logs = {}
    for name, dtype in LOGGED.items():
        path = folder / f"{name}.log"
        _truncate(path, state["logs"][name] * np.dtype(dtype).itemsize)
        logs[name] = np.fromfile(path, dtype=dtype)
    sketch = _load_sketch(folder / state["sketch"])
    for stray in folder.glob("sketch-*"):
        if stray.name != state["sketch"]:
            stray.unlink()  # a checkpoint cut short before its state.json
    _CorpusWriter.cut_back(store.folder, state["corpus"])
    return state, CorpusFilter.restore(filters, logs, sketch), False


def _read_state(folder: Path) -> dict | None:
    try:
        return json.loads((folder / _STATE).read_text())
    except (OSError, ValueError):
        return None


def _start_afresh(corpus: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        path.unlink()
    for shard in corpus.glob("shard-*.jsonl"):
        shard.unlink()
    (corpus / _CorpusWriter.name(0)).write_bytes(b"")


def _raw_position_exists(raw: Path, position: list) -> bool:
    shard, offset = position
    return shard is None or ((raw / shard).exists() and (raw / shard).stat().st_size >= offset)


def _raw_batches(raw: Path, position: list, size: int) -> Iterator[tuple[list[bytes], list]]:
    """The complete lines of the raw shards after `position` ([shard name, byte offset]), in
    batches, each with the position just after its last line."""
    shard, offset = position
    lines: list[bytes] = []
    for path in sorted(raw.glob("shard-*.ndjson")):
        if shard is not None and path.name < shard:
            continue
        start = offset if path.name == shard else 0
        with open(path, "rb") as handle:
            handle.seek(start)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a torn last line: its input is not finished, so it is not judged
                start += len(line)
                if line.strip():
                    lines.append(line)
                if len(lines) == size:
                    yield lines, [path.name, start]
                    lines = []
        shard, offset = path.name, start
    if lines:
        yield lines, [shard, offset]


def _parse(lines: list[bytes], shard: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in lines]
    except ValueError:  # the raw log is written whole by `commit`: only a hand edit breaks a line
        raise InputError("a raw record is not a JSON line", str(shard),
                         "remove the broken line, or the corpus folder, and run again") from None


def _checkpoint(folder: Path, state: dict, judge: CorpusFilter, corpus: "_CorpusWriter", tally: Counter) -> None:
    """Save everything judged so far; state.json goes last, naming the lengths it stands for."""
    for name, part in judge.take_log().items():
        if len(part):
            _append(folder / f"{name}.log", part.tobytes())
        state["logs"][name] += len(part)
    state["checkpoint"] += 1
    sketch = f"sketch-{state['checkpoint']:06d}.npz"
    _save_sketch(folder / sketch, judge.sketch)
    previous, state["sketch"] = state["sketch"], sketch
    state["corpus"] = corpus.position()
    state["records"] = corpus.total
    state["dropped"] = dict(tally)
    _write_atomic(folder / _STATE, json.dumps(state, indent=1))
    if previous:
        (folder / previous).unlink(missing_ok=True)


def _save_sketch(path: Path, sketch: np.ndarray) -> None:
    """The sketch, as its used cells while few are (a small corpus writes kilobytes, not 64 MB)."""
    used = np.flatnonzero(sketch)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        if len(used) < sketch.size // 3:
            np.savez(handle, cells=used.astype(np.uint32), counts=sketch.ravel()[used])
        else:
            np.savez(handle, dense=sketch)
    os.replace(tmp, path)


def _load_sketch(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as saved:
        if "dense" in saved:
            return saved["dense"].reshape(SKETCH_SHAPE)
        sketch = np.zeros(SKETCH_SHAPE, np.uint32)
        sketch.ravel()[saved["cells"]] = saved["counts"]
        return sketch


def _append(path: Path, data: bytes) -> None:
    # One unbuffered write: what a kill leaves is a prefix, cut back on resume.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _truncate(path: Path, size: int) -> None:
    with open(path, "ab") as handle:
        handle.truncate(size)


class _CorpusWriter:
    """Appends survivors to the corpus shards, SHARD_RECORDS to a shard."""

    def __init__(self, folder: Path, position: dict):
        self.folder = folder
        self.shards, self.records, self.bytes = position["shards"], position["records"], position["bytes"]
        self.total = (self.shards - 1) * SHARD_RECORDS + self.records

    @staticmethod
    def name(index: int) -> str:
        return f"shard-{index:05d}.jsonl"

    @classmethod
    def cut_back(cls, folder: Path, position: dict) -> None:
        """Remove what was appended after the checkpoint at `position`."""
        for shard in folder.glob("shard-*.jsonl"):
            if int(shard.stem.split("-")[1]) >= position["shards"]:
                shard.unlink()
        _truncate(folder / cls.name(position["shards"] - 1), position["bytes"])

    def write(self, lines: list[bytes]) -> None:
        while lines:
            if self.records == SHARD_RECORDS:
                self.shards, self.records, self.bytes = self.shards + 1, 0, 0
            room = SHARD_RECORDS - self.records
            chunk, lines = lines[:room], lines[room:]
            data = b"".join(chunk)
            _append(self.folder / self.name(self.shards - 1), data)
            self.records += len(chunk)
            self.bytes += len(data)
            self.total += len(chunk)

    def position(self) -> dict:
        return {"shards": self.shards, "bytes": self.bytes, "records": self.records}

    def names(self) -> list[str]:
        return [self.name(index) for index in range(self.shards)]
