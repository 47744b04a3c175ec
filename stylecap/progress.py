"""Rich progress displays shared by the long-running commands."""
from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class TrainProgress:
    """Step bar with loss, learning rate and samples/s; a no-op when disabled (other processes, tests)."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, description: str = "training"):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[rate]} samples/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, disable=not enabled, transient=False)
        self.task = self.progress.add_task(description, total=total, completed=start, loss="-", lr="-", rate="-")

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, step: int, record: dict) -> None:
        self.progress.update(self.task, completed=step, loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                             rate=f"{record['samples_per_s']:.0f}")


def simple_progress(description: str, total: int | None, enabled: bool = True) -> Progress:
    """A plain bar for counting items (embedding, captioning)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not enabled)
