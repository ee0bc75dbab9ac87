"""The one domain exception of fercli; the CLI edge maps it to an exit code and a one-line message."""

from __future__ import annotations

# Exit codes (documented in docs/exit-codes.md). 2 is click's own code for a bad option or argument.
BAD_INPUT = 1  # a data file, checkpoint or value that cannot be used
USAGE = 2  # options that do not fit together
NOT_FOUND = 3  # a file, run or model that does not exist
IO_ERROR = 4  # the output could not be written (disk full, read-only folder)
INTERRUPTED = 130  # Ctrl-C or SIGTERM; training saved `last` first
INTERNAL = 70  # a bug in fercli (sysexits' EX_SOFTWARE): said in one line, the traceback behind --debug
PIPE_CLOSED = 141  # stdout's reader went away: what a shell reports for a filter ended by SIGPIPE


class Stopped(BaseException):
    """A stop from outside: SIGINT, SIGTERM, or stdout's reader gone. A BaseException, so it passes every
    `except Exception` (and click's and Typer's handlers, which would swallow a KeyboardInterrupt into a
    silent exit) while `finally` blocks and context managers remove temporaries; the edge maps it to
    `code` and says `message` (nothing when empty)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class FerError(Exception):
    """An error the user can act on: `str(err)` is the whole message, `code` the exit status.
    An empty message means it was already reported (by torchrun's rank 0): exit quietly with the code."""

    def __init__(self, message: str, code: int = BAD_INPUT) -> None:
        super().__init__(one_line(message))
        self.code = code


def one_line(message: str) -> str:
    """One printable line, whatever a wrapped library's text or a bad file's bytes hold: newlines folded,
    control characters (a terminal would act on them: escape sequences) and undecodable bytes of file
    names shown as escapes. Every message fercli prints goes through this."""
    return escaped(" ".join(message.split()))


def escaped(text: str) -> str:
    """`text` with every non-printable character but the newline shown as an escape (`\x1b`, `\udcff`)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode() for c in text)
