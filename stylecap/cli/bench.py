"""`stylecap bench …`: performance and quality benchmarks that write JSON reports.

Each benchmark command is defined next to the commands of its room (e.g. ``cli/generate.py``
defines ``bench generate``) on the ``bench_app`` group declared here.
"""
from __future__ import annotations

import typer

from stylecap.cli import app

bench_app = typer.Typer(help="Benchmarks: side-by-side speed and quality runs with JSON reports.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
