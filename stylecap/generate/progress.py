"""Counters of a generation run and their live display."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter


@dataclasses.dataclass
class Tally:
    total: int = 0  # inputs to process in this run
    done: int = 0
    failed: int = 0
    skipped: int = 0  # inputs that can never give sentences (see ItemSkipped)
    retried: int = 0
    requests: int = 0  # HTTP requests sent, retries included
    tokens_in: int = 0
    tokens_out: int = 0
    records: int = 0  # sentences accepted into the raw corpus
    price: tuple[float, float] | None = None  # dollars per million prompt / completion tokens
    failures: Counter = dataclasses.field(default_factory=Counter)  # reason -> inputs
    skips: Counter = dataclasses.field(default_factory=Counter)  # reason -> inputs
    rejected: Counter = dataclasses.field(default_factory=Counter)  # reason -> sentences
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return (self.tokens_in * self.price[0] + self.tokens_out * self.price[1]) / 1e6

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        rate = self.requests / max(self.seconds, 1e-9)
        cost = "cost unknown" if self.cost is None else f"${self.cost:.4f}"
        return (f"done {self.done}/{self.total} · skipped {self.skipped} · failed {self.failed} · "
                f"retried {self.retried} · "
                f"{rate:.1f} req/s · {self.tokens_in + self.tokens_out:,} tokens · {cost}")


@contextlib.contextmanager
def live(tally: Tally, enabled: bool = True):
    """Show the tally on stderr while the body runs (only on a terminal: logs stay clean).
    Yields a function to call whenever an input finishes."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TimeElapsedColumn
    from rich.text import Text

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda: None
        return

    class TallyColumn(ProgressColumn):
        def render(self, task) -> Text:
            return Text(tally.line())

    with Progress(BarColumn(), TallyColumn(), TimeElapsedColumn(), console=console,
                  refresh_per_second=4) as progress:
        task = progress.add_task("generate", total=tally.total)
        yield lambda: progress.update(task, completed=tally.done + tally.skipped + tally.failed)
