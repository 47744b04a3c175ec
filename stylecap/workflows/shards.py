"""Captioning across processes and machines: which files a process takes, where it writes them, and
how the pieces become the one ``--out`` file.

Launched with ``torchrun`` or ``accelerate launch``, each process reads ``RANK`` and ``WORLD_SIZE``,
takes every ``WORLD_SIZE``-th of the files not yet done and appends their records to its own shard
file next to ``--out`` (``captions.shard-0-of-2.jsonl``). The first process merges every shard into
``--out`` once all are finished and removes them. What is done is read from ``--out`` and from every
shard (of this run or an earlier one, with any number of processes), so a killed run continues with
``--resume`` under any number of processes and nothing is captioned twice.
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from stylecap.core.images import LazyBatches, file_key
from stylecap.errors import UsageError, first_line
from stylecap.workflows.records import OutputFile

T = TypeVar("T")
# A process waits at the end for the slowest: shares are equal in count, but machines differ in speed.
# A process that dies closes its connection and the others stop at once; this bounds only a hung one.
WAIT_FOR_OTHERS = timedelta(days=7)
MERGE_CHUNK = 256  # records written to the merged file at a time


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes a launcher started (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # among the processes on this machine: which GPU is its own

    @classmethod
    def from_env(cls) -> "Ranks":
        """From the variables ``torchrun`` and ``accelerate launch`` set; none (or a world of 1) is one process."""
        size = _env_int("WORLD_SIZE", 1)
        if size <= 1:
            return cls()
        rank = _env_int("RANK", None)
        if rank is None or not 0 <= rank < size:
            raise UsageError(f"RANK must be a process number from 0 to {size - 1}", f"RANK={os.environ.get('RANK')}",
                             "start the processes with torchrun or accelerate launch")
        return cls(rank, size, _env_int("LOCAL_RANK", rank))

    @property
    def many(self) -> bool:
        return self.size > 1

    @property
    def first(self) -> bool:
        return self.rank == 0

    def share(self, items: Iterable[T]) -> Iterator[T]:
        """This process's items: every ``size``-th, from its rank on. The same stream on every process
        gives each item to exactly one, and shares that differ in length by at most one."""
        return itertools.islice(items, self.rank, None, self.size)

    def device(self, device: str | None) -> str | None:
        """Each process on its own GPU: the default or a plain ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        import torch

        if device not in (None, "cuda") or not torch.cuda.is_available():
            return device
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"


def first_process() -> bool:
    """Is this the first (or only) process of a launch: the one that writes shared files and prints
    the summaries that should appear once, not once per process?"""
    return Ranks.from_env().first


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name} must be a whole number", f"{name}={value}",
                         "start the processes with torchrun or accelerate launch") from None


class ProcessGroup:
    """The processes of a run, joined (gloo: captioning exchanges no tensors, so any device will do)
    to wait for each other and to share their reports."""

    def __init__(self):
        self.created = False

    def __enter__(self) -> "ProcessGroup":
        import torch.distributed as dist

        if not dist.is_initialized():  # a caller (an accelerate script) may have joined them already
            try:
                dist.init_process_group("gloo", timeout=WAIT_FOR_OTHERS)
            except (ValueError, RuntimeError) as exc:  # WORLD_SIZE set by hand without MASTER_ADDR/PORT, a
                # refused or unreachable address, a port in use
                raise UsageError(f"cannot join the other processes: {first_line(exc)}", None,
                                 "start them with torchrun or accelerate launch") from None
            self.created = True
        return self

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every process's ``value``, in rank order, on every process."""
        import torch.distributed as dist

        values = [None] * dist.get_world_size()
        dist.all_gather_object(values, value)
        return values

    def __exit__(self, *exc) -> None:
        import torch.distributed as dist

        if self.created:
            dist.destroy_process_group()


class Shards:
    """The shard files next to ``--out``: one per process of each run, until merged into ``--out``."""

    def __init__(self, out: OutputFile):
        self.out = out
        stem, suffix = re.escape(out.path.stem), re.escape(out.path.suffix)
        self.pattern = re.compile(rf"{stem}\.shard-(\d+)-of-(\d+){suffix}")

    def path(self, ranks: Ranks) -> Path:
        name = f"{self.out.path.stem}.shard-{ranks.rank}-of-{ranks.size}{self.out.path.suffix}"
        return self.out.path.with_name(name)

    def existing(self) -> list[Path]:
        """Every shard file of this output, of any run, by number of processes then rank."""
        folder = self.out.path.parent
        if not folder.is_dir():
            return []
        found = [(self.pattern.fullmatch(entry.name), Path(entry.path)) for entry in os.scandir(folder)]
        return [path for _, path in sorted(((int(m[2]), int(m[1])), path) for m, path in found if m)]

    def check(self, resume: bool) -> None:
        """Shards left by an earlier run belong to it: continued with --resume, never written over."""
        left = self.existing()
        if left and not resume:
            raise UsageError(f"{len(left)} shard file(s) of an earlier run are not yet merged", str(left[0]),
                             "pass --resume to continue that run (their records go into --out), or remove them")

    def take_over(self, resume: bool) -> None:
        """In a run of one process: what an earlier run in several left goes into ``--out`` first, so
        the run goes on as if that one had been a run of one (without shards, nothing changes)."""
        self.check(resume)
        self.merge()

    def done_keys(self) -> set[str]:
        """Files with a record in ``--out`` or in any shard: what no process of this run captions again."""
        done = self.out.done_keys()
        for path in self.existing():
            done |= OutputFile(path, resume=True).done_keys()
        return done

    def merge(self) -> int:
        """Every shard's records into ``--out``, after the records it holds, each file's once; then the
        shards are removed. The new ``--out`` is written beside it and renamed over it, so a kill at
        any point leaves the old file or the merged one, and shards whose files the next merge skips."""
        shards = self.existing()
        if not shards:
            return 0
        merging = self.out.path.with_name(f"{self.out.path.stem}.merging{self.out.path.suffix}")
        merging.unlink(missing_ok=True)  # what a merge killed half way left
        target, merged = OutputFile(merging), 0
        try:
            for chunk in LazyBatches(self._records(shards), MERGE_CHUNK):
                target.write(chunk)
                merged += len(chunk)
        except BaseException:
            target.close()
            merging.unlink(missing_ok=True)  # the shards and --out are untouched: the next merge redoes it
            raise
        target.close()
        if merged:
            os.replace(merging, self.out.path)
        for path in shards:
            path.unlink()
        return merged

    def _records(self, shards: list[Path]) -> Iterator[dict]:
        """``--out``'s records, then the shards' taken in turn a file at a time (a fresh run's files
        come back in the order of the folder walk); a file already seen is left out."""
        parts = [_by_file(OutputFile(path, resume=True).read()) for path in shards]
        taken: set[str] = set()
        for key, records in itertools.chain(_by_file(self.out.read()), _in_turn(parts)):
            if key not in taken:
                taken.add(key)
                yield from records


def _by_file(records: Iterable[dict]) -> Iterator[tuple[str, list[dict]]]:
    """(file key, its records) for each run of records of one file (its K captions, or its failure)."""
    for path, group in itertools.groupby(records, key=lambda r: r["path"]):
        yield file_key(path), list(group)


def _in_turn(iterators: list[Iterator[T]]) -> Iterator[T]:
    """One item of each iterator in turn, until all are spent (round-robin)."""
    active = list(iterators)
    while active:
        still = []
        for iterator in active:
            item = next(iterator, _END)
            if item is not _END:
                yield item
                still.append(iterator)
        active = still


_END = object()
