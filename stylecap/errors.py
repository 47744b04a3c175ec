"""One kind of error a user can act on, and the exit codes the CLI documents.

Every failure a user can cause (bad file, bad option, missing model, unreachable server) is raised
as a :class:`StylecapError`; the CLI prints it as one line and exits with its code. Anything else is
a bug and keeps its traceback.
"""
from __future__ import annotations

import unicodedata

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


class Interrupted(StylecapError):
    """Ctrl-C in a command that knows how it continues: the command catches the KeyboardInterrupt and
    raises this with its advice, which the CLI prints after "interrupted: " (exit 130). Not itself a
    KeyboardInterrupt, so that it reaches the CLI with its advice rather than as Click's bare code."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, advice: str):
        super().__init__(advice)
        self.advice = advice


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


# Characters that steer a terminal rather than show: C0/C1 controls (ESC starts escape sequences
# that can recolour, retitle or clear the screen), line and paragraph separators, and the
# bidirectional overrides that make text read differently from what it holds.
_STEERING = set("\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """`text` safe to show on a terminal: every control character written as its Python escape
    (ESC as \\x1b, a newline as \\n), a byte of a file name that is not UTF-8 (which Python holds
    as a lone surrogate, and no terminal can be sent) as \\xNN, everything else unchanged."""
    if text.isprintable():
        return text
    return "".join(_shown(c) for c in text)


def _shown(char: str) -> str:
    if "\udc80" <= char <= "\udcff":  # os.fsdecode's stand-in for an undecodable byte
        return f"\\x{ord(char) - 0xDC00:02x}"
    category = unicodedata.category(char)
    if category in ("Cc", "Cs") or char in _STEERING:
        return repr(char)[1:-1]
    return char
