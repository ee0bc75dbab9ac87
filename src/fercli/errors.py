"""The one domain exception of fercli; the CLI edge maps it to an exit code and a one-line message."""

from __future__ import annotations

# Exit codes (documented in docs/exit-codes.md). 2 is click's own code for a bad option or argument.
BAD_INPUT = 1  # a data file, checkpoint or value that cannot be used
USAGE = 2  # options that do not fit together
NOT_FOUND = 3  # a file, run or model that does not exist
IO_ERROR = 4  # the output could not be written (disk full, read-only folder)
INTERRUPTED = 130  # Ctrl-C; training saved `last` first


class FerError(Exception):
    """An error the user can act on: `str(err)` is the whole message, `code` the exit status.
    An empty message means it was already reported (by torchrun's rank 0): exit quietly with the code."""

    def __init__(self, message: str, code: int = BAD_INPUT) -> None:
        # One printable line, whatever a wrapped library's text or a bad file's bytes hold: newlines
        # folded, control characters shown as escapes (a terminal would act on them, rich drops them).
        text = " ".join(message.split())
        super().__init__("".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text))
        self.code = code
