"""An append-only column of values whose full blocks move to memory-mapped Arrow files, so a reader's
millions of distinct strings live in the page cache, not as Python objects.

Arrow is the library for columns of strings on disk; what it lacks is the append-and-spill policy
and Python's sequence protocol, which are all this module adds.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from typing import Iterator, Sequence

import pyarrow as pa

from stylecap.paths import cache_root

BLOCK = 32768  # values held as Python objects before they are written out: the bound on a column's heap
_WRITTEN = [0]  # bytes spilled by this process so far (the files are unlinked at once, so they cannot be measured)


def total_spilled_bytes() -> int:
    """Bytes this process's columns have spilled to mapped files (what a memory figure should count)."""
    return _WRITTEN[0]


class SpilledValues(Sequence):
    """Values in order of appending; every ``block`` of them is written to a temporary Arrow file and
    read back memory-mapped. The files go with the column (or with the process)."""

    def __init__(self, block: int | None = None):
        self.block = block or BLOCK
        self._blocks: list = []  # full blocks: Arrow arrays over their files (a plain list if Arrow refused the values)
        self._pending: list = []
        self._files: list[str] = []
        self.last = None  # the value appended last, as given
        self._bytes = 0
        weakref.finalize(self, _remove, self._files)

    def append(self, value) -> int:
        """Add ``value``; returns its position."""
        self._pending.append(value)
        self.last = value
        if len(self._pending) == self.block:
            self._blocks.append(self._spill(self._pending))
            self._pending = []
        return len(self) - 1

    def __len__(self) -> int:
        return len(self._blocks) * self.block + len(self._pending)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self._slice(*i.indices(len(self)))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        block, offset = divmod(i, self.block)
        if block == len(self._blocks):
            return self._pending[offset]
        return _python(self._blocks[block][offset])

    def __iter__(self) -> Iterator:
        for block in self._blocks:  # one block's Python objects at a time
            yield from _block_values(block, 0, self.block)
        yield from self._pending

    def _slice(self, start: int, stop: int, step: int) -> list:
        if step != 1:
            return [self[i] for i in range(start, stop, step)]
        out = []
        while start < stop:
            block, offset = divmod(start, self.block)
            take = min(stop - start, self.block - offset)
            out += self._pending[offset:offset + take] if block == len(self._blocks) else \
                _block_values(self._blocks[block], offset, take)
            start += take
        return out

    def spilled_bytes(self) -> int:
        return self._bytes

    def _spill(self, values: list):
        try:
            array = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):  # values Arrow has no type for stay
            return values
        folder = cache_root() / "spill"  # the cache's disk, not /tmp (often a RAM-backed tmpfs)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, file = tempfile.mkstemp(prefix="stylecap-values-", suffix=".arrow", dir=folder)
            os.close(handle)
            self._files.append(file)
            with pa.OSFile(file, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("value", array.type)])) as writer:
                writer.write_batch(pa.record_batch([array], names=["value"]))
            column = pa.ipc.open_file(pa.memory_map(file)).get_batch(0).column(0)
            size = os.path.getsize(file)
        except OSError:  # a full or read-only disk: this block stays in memory, the read goes on
            return values
        self._bytes += size
        _WRITTEN[0] += size
        if os.name == "posix":  # the mapping keeps the data; unlinked now, a killed run leaves no file behind
            os.remove(file)
            self._files.remove(file)
        return column


def _python(value):
    """An Arrow scalar as the Python value it was given as (a list column's values were tuples)."""
    value = value.as_py() if isinstance(value, pa.Scalar) else value
    return tuple(value) if isinstance(value, list) else value


def _block_values(block, offset: int, length: int) -> list:
    if isinstance(block, list):
        return block[offset:offset + length]
    return [tuple(v) if isinstance(v, list) else v for v in block.slice(offset, length).to_pylist()]


def _remove(files: list[str]) -> None:
    for file in files:
        with contextlib.suppress(OSError):
            os.remove(file)
