"""One kind of error a user can act on, and the exit codes the CLI documents.

Every failure a user can cause (bad file, bad option, missing model, unreachable server) is raised
as a :class:`StylecapError`; the CLI prints it as one line and exits with its code. Anything else is
a bug and keeps its traceback.
"""
from __future__ import annotations

# Exit codes, documented in README.md ("Exit codes").
EXIT_OK = 0
EXIT_BUG = 1  # an unexpected internal error (a bug: please report the traceback)
EXIT_USAGE = 2  # unknown option or bad argument value (also Typer/Click's own code)
EXIT_INPUT = 3  # an input file or folder is missing, unreadable or malformed
EXIT_MODEL = 4  # a model name or folder cannot be loaded
EXIT_SERVICE = 5  # a remote service (LLM server, web site) failed past its retry budget
EXIT_PARTIAL = 6  # the run finished, but some items failed (each is reported and recorded)
EXIT_INTERRUPTED = 130  # Ctrl-C: work done so far is saved; run again to resume


class StylecapError(Exception):
    """An error with a one-line explanation: what went wrong, where, and what to do."""

    exit_code = EXIT_BUG

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f"; {self.fix}"
        return " ".join(text.split())  # always one line


class UsageError(StylecapError):
    exit_code = EXIT_USAGE


class InputError(StylecapError):
    exit_code = EXIT_INPUT


class ModelError(StylecapError):
    exit_code = EXIT_MODEL


class ServiceError(StylecapError):
    exit_code = EXIT_SERVICE


class PartialRun(StylecapError):
    """The run finished, but some items failed (each is reported and recorded; a rerun retries them)."""

    exit_code = EXIT_PARTIAL


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]
