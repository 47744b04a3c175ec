"""Printing summaries, estimates, corpus stats and benchmark results for people."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from stylecap.errors import printable


def _table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=Text(printable(title)), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:  # plain Text: a path or reason is shown as is, never read as markup
        table.add_row(Text(printable(name)), Text("" if value is None else printable(str(value))))
    return table


def _money(value: float | None) -> str:
    return "unknown (pass --price-in/--price-out)" if value is None else f"${value:.4f}"


def show_summary(summary: dict, console: Console) -> None:
    run = summary["this_run"]
    rows = [("corpus", f"{summary['records']:,} records in {summary['out']}"),
            ("inputs", f"{summary['inputs']['done']:,} done, {summary['inputs']['skipped']:,} skipped, "
                       f"{summary['inputs']['failed']:,} failed"),
            ("this run", f"{run['done']:,} done, {run['skipped']:,} skipped, {run['failed']:,} failed, "
                         f"{run['retried']:,} retried "
                         f"in {run['seconds']}s"),
            ("requests", f"{run['requests']:,} ({run['requests_per_second']} req/s)"),
            ("tokens", f"{run['prompt_tokens']:,} prompt + {run['completion_tokens']:,} completion"),
            ("cost", _money(run["cost"]))]
    rows += [(f"failed: {reason}", n) for reason, n in summary["inputs"]["failure_reasons"].items()]
    rows += [(f"skipped: {reason}", n) for reason, n in summary["inputs"]["skip_reasons"].items()]
    rows += [(f"rejected: {reason}", n) for reason, n in run["rejected"].items()]
    rows += [(f"dropped: {reason}", n) for reason, n in summary["dropped"].items()]
    console.print(_table(f"stylecap generate: {summary['style']} from {summary['source']}", rows))


def show_estimate(estimate: dict, console: Console) -> None:
    rows = [(key.replace("_", " "), _money(value) if key == "max_cost" else f"{value:,}")
            for key, value in estimate.items() if key not in ("dry_run", "style", "source", "out")]
    console.print(_table(f"dry run: {estimate['style']} from {estimate['source']} into {estimate['out']}", rows))


def show_stats(stats: dict, console: Console) -> None:
    words = stats["words"]
    rows = [("records", f"{stats['records']:,}"), ("styles", stats["styles"]), ("sources", stats["sources"]),
            ("words", ", ".join(f"{k} {v}" for k, v in words.items())),
            ("duplicate rate", f"{stats['duplicate_rate']:.2%}")]
    manifest = stats["manifest"]
    if manifest:
        rows.append(("inputs", f"{manifest['inputs']['done']:,} done, {manifest['inputs']['failed']:,} failed"))
    rows += [(f"top {name}", "; ".join(f"{gram} ({n})" for gram, n in grams[:5]))
             for name, grams in stats["top_ngrams"].items()]
    console.print(_table(f"corpus {stats['folder']}", rows))
