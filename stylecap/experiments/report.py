"""The one report shape of every speed bench: our path and a reference path side by side, measured
in the same run (items, seconds, items/s, peak memory), their ratio, the settings and the machine.

To add a bench: a settings dataclass, a reference function modelled on the code we compare against,
a function that runs both through :func:`measure` and returns a :class:`BenchReport`, and a
``bench NAME`` command on ``stylecap.cli.bench.bench_app``.
"""
from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import psutil


@dataclass
class PathResult:
    name: str
    items: int
    seconds: float
    peak_memory_mb: float  # this process and its children (PSS where the OS reports it), sampled

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds else 0.0


@dataclass
class BenchReport:
    name: str
    unit: str  # what an item is ("images")
    ours: PathResult
    reference: PathResult
    setup: dict = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """How many times faster our path is (items/s ratio)."""
        return self.ours.items_per_s / self.reference.items_per_s if self.reference.items_per_s else 0.0

    def to_dict(self) -> dict:
        rows = {key: {**asdict(value), "items_per_s": value.items_per_s}
                for key, value in (("ours", self.ours), ("reference", self.reference))}
        return {"benchmark": self.name, "unit": self.unit, **rows, "speedup": self.speedup, "setup": self.setup,
                "environment": environment()}

    def show(self, console=None) -> None:
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        table = Table("path", self.unit, "seconds", f"{self.unit}/s", "peak memory (MB)", title=f"bench {self.name}")
        for row in (self.reference, self.ours):
            table.add_row(row.name, str(row.items), f"{row.seconds:.2f}", f"{row.items_per_s:.2f}",
                          f"{row.peak_memory_mb:.0f}")
        console.print(table)
        console.print(f"speedup: {self.speedup:.2f}x {self.unit}/s", highlight=False)

    def save(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def measure(name: str, run: Callable[[], int], sync: Callable[[], None] | None = None) -> PathResult:
    """Time ``run`` (which returns how many items it did) and sample peak memory while it runs."""
    sampler = _PeakMemory()
    with sampler:
        start = time.perf_counter()
        items = run()
        if sync:
            sync()  # wait for queued accelerator work before stopping the clock
        seconds = time.perf_counter() - start
    return PathResult(name, items, seconds, sampler.peak / 2**20)


class _PeakMemory:
    """Peak memory of this process plus its children (e.g. DataLoader workers), sampled every 20 ms on a
    thread. Proportional set size, so pages that forked workers share with their parent count once."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _memory(self) -> int:
        me = psutil.Process()
        total = 0
        for process in [me, *me.children(recursive=True)]:
            try:
                info = process.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except psutil.Error:  # a worker that just exited
                pass
        return total

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._memory())

    def __enter__(self):
        self.peak = self._memory()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._memory())


def environment() -> dict:
    import torch  # here, not at the top: the generate bench runs without torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return {"device": device, "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version()}
