"""The `stylecap` command line: one Typer app; each command module parses options into the option
dataclasses (:mod:`stylecap.options`, which own defaults, help and checks), calls one library
function and prints. The workflow a command runs is imported inside the command, so `--help` does
not load torch: the one place where the project imports its own modules lazily.

Add a command by adding a module here that defines it on ``app`` and listing it in ``_COMMANDS``.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import logging
import os
import sys
import warnings

import typer
from rich.console import Console
from rich.text import Text

from stylecap import __version__
from stylecap.errors import EXIT_INTERRUPTED, InputError, Interrupted, StylecapError, printable

app = typer.Typer(
    name="stylecap",
    help="Train vision skills from text alone (CLOSE), caption images, build style corpora.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# markup=False: what goes to stderr holds file names and values the user gave ("x[/]y.png", "[bold]"),
# shown as they are; a style is given as a Text's style, never as markup in a string.
err_console = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
# What Ctrl-C prints when the command has no advice of its own (README, "Exit codes").
DEFAULT_RESUME_ADVICE = ("work done so far is saved; to continue, run the same command again "
                         "(with --resume, for commands that have it)")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"stylecap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print stylecap's version and exit.")) -> None:
    """Train vision skills from text alone (CLOSE), caption images, build style corpora."""

def option(cls, name: str, *param_decls: str, **kwargs):
    """A Typer option whose default and help come from field ``name`` of an option dataclass, so they
    are written once (extra Typer arguments, e.g. ``min=1``, pass through)."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
    flag = spec.metadata.get("flag")
    decls = param_decls or ((flag,) if flag else ())
    return typer.Option(default, *decls, help=kwargs.pop("help", spec.metadata.get("help")), **kwargs)


# Command modules, imported for their side effect of registering commands on ``app``.
_COMMANDS = ["train", "caption", "generate", "gap", "world", "evaluate", "bench", "benches", "demo"]


def _register_commands() -> None:
    for name in _COMMANDS:
        try:
            importlib.import_module(f"stylecap.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stylecap.cli.{name}":
                raise
    _leave_path_checks_to_stylecap(app)


def _leave_path_checks_to_stylecap(typer_app: typer.Typer) -> None:
    """Typer refuses a path that exists but cannot be read as a usage error (exit 2) before the
    command runs. The readers check the same and call it what it is, an input problem (exit 3, as
    README's table says), naming the file and the fix; so Typer's check is off for every path."""
    for command in typer_app.registered_commands:
        for parameter in inspect.signature(command.callback).parameters.values():
            if isinstance(parameter.default, typer.models.ParameterInfo):
                parameter.default.readable = False
    for group in typer_app.registered_groups:
        _leave_path_checks_to_stylecap(group.typer_instance)


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
        if code == EXIT_INTERRUPTED:  # Ctrl-C: Typer turned the KeyboardInterrupt into this code
            _say_interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except Interrupted as exc:  # Ctrl-C in a command that knows how it continues
        _say_interrupted(exc.advice)
        sys.exit(EXIT_INTERRUPTED)
    except (KeyboardInterrupt, typer.Abort):
        _say_interrupted()
        sys.exit(EXIT_INTERRUPTED)
    except StylecapError as exc:
        _say_error(exc)
    except typer.Exit as exc:  # raised by commands that pick their own exit code
        sys.exit(exc.exit_code)
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:  # a path the user gave, never a bug
        _say_error(InputError(_os_reason(exc), exc.filename and os.fsdecode(exc.filename),
                              "check the path and its permissions"))
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # Click's usage errors (bad option, …)
            shown = io.StringIO()
            exc.show(file=shown)
            lines = shown.getvalue().rstrip("\n").split("\n")
            sys.stderr.write("".join(printable(line) + "\n" for line in lines))  # the bad value may hold escapes
            sys.exit(exc.exit_code)
        raise


def _say_error(exc: StylecapError) -> None:
    """One line on stderr. Its text holds paths and values the user gave: shown literally, never read
    as Rich markup (``x[/]y.png``) nor sent to the terminal as control characters."""
    exc.what, exc.where, exc.fix = (part and printable(part) for part in (exc.what, exc.where, exc.fix))
    err_console.print(Text.assemble(("error:", "bold red"), " ", exc.line()))
    sys.exit(exc.exit_code)


def _say_interrupted(advice: str = DEFAULT_RESUME_ADVICE) -> None:
    err_console.print(Text("interrupted: " + printable(advice)))


def _os_reason(exc: OSError) -> str:
    return (exc.strerror or type(exc).__name__).lower()
