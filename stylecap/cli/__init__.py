"""The `stylecap` command line: one Typer app; each command module parses options into the option
dataclasses (:mod:`stylecap.options`, which own defaults, help and checks), calls one library
function and prints. The workflow a command runs is imported inside the command, so `--help` does
not load torch: the one place where the project imports its own modules lazily.

Add a command by adding a module here that defines it on ``app`` and listing it in ``_COMMANDS``.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
import warnings

import typer
from rich.console import Console

from stylecap.errors import EXIT_INTERRUPTED, StylecapError

app = typer.Typer(
    name="stylecap",
    help="Train vision skills from text alone (CLOSE), caption images, build style corpora.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

def option(cls, name: str, *param_decls: str, **kwargs):
    """A Typer option whose default and help come from field ``name`` of an option dataclass, so they
    are written once (extra Typer arguments, e.g. ``min=1``, pass through)."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
    flag = spec.metadata.get("flag")
    decls = param_decls or ((flag,) if flag else ())
    return typer.Option(default, *decls, help=kwargs.pop("help", spec.metadata.get("help")), **kwargs)


# Command modules, imported for their side effect of registering commands on ``app``.
_COMMANDS = ["train", "caption", "generate", "gap", "world", "evaluate", "bench", "demo"]


def _register_commands() -> None:
    for name in _COMMANDS:
        try:
            importlib.import_module(f"stylecap.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stylecap.cli.{name}":
                raise


def _quiet_libraries() -> None:
    """Our own progress and errors are what a user reads; keep libraries' chatter out of the terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(peft|transformers|torch)\.")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user-facing errors into one line and an exit code."""
    _quiet_libraries()
    _register_commands()
    try:
        code = app(args=argv, standalone_mode=False)  # Click returns (not raises) a typer.Exit's code here
        if isinstance(code, int) and code:
            sys.exit(code)
    except StylecapError as exc:
        err_console.print(f"[bold red]error:[/] {exc.line()}", markup=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: work done so far is saved; run the same command to resume")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:  # raised by commands that pick their own exit code
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # Click's usage errors (bad option, …)
            exc.show()
            sys.exit(exc.exit_code)
        raise
