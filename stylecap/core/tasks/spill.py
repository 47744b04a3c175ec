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

BLOCK = 32768  # values held as Python objects before they are written out: the bound on a column's heap


class SpilledValues(Sequence):
    """Values in order of appending; every ``block`` of them is written to a temporary Arrow file and
    read back memory-mapped. The files go with the column (or with the process)."""

    def __init__(self, block: int | None = None):
        self.block = block or BLOCK
        self._blocks: list = []  # full blocks: Arrow arrays over their files (a plain list if Arrow refused the values)
        self._pending: list = []
        self._files: list[str] = []
        self.last = None  # the value appended last, as given
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
        return sum(os.path.getsize(file) for file in self._files if os.path.exists(file))

    def _spill(self, values: list):
        try:
            array = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):  # values Arrow has no type for stay in memory
            return values
        handle, file = tempfile.mkstemp(prefix="stylecap-values-", suffix=".arrow")
        os.close(handle)
        self._files.append(file)
        with pa.OSFile(file, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("value", array.type)])) as writer:
            writer.write_batch(pa.record_batch([array], names=["value"]))
        return pa.ipc.open_file(pa.memory_map(file)).get_batch(0).column(0)


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
