"""How fercli talks to people: everything human goes to stderr, stdout is left for data.

Rich already honours NO_COLOR and drops styling when stderr is not a terminal; on top of that,
`plain()` tells callers to print one line per event instead of live widgets, and `--quiet`
silences all but errors.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

from fercli.errors import escaped, one_line

_state = {"quiet": False, "defaults_shown": set()}


def _make_console() -> Console:
    con = Console(stderr=True, highlight=False, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
    if not con.is_terminal:
        # Logs and CI captures: wide enough that tables are not squeezed into 80 columns.
        con = Console(stderr=True, highlight=False, soft_wrap=True, no_color=True, width=160)
    return con


stderr = _make_console()


def reset(quiet: bool = False) -> None:
    """Rebuild the stderr console (the CLI calls this once per invocation; tests call it too)."""
    global stderr
    stderr = _make_console()
    _state["quiet"] = quiet
    _state["defaults_shown"] = set()


def quiet() -> bool:
    return bool(_state["quiet"])


def plain() -> bool:
    """True when live widgets (progress bars) would be noise: not a terminal, or quiet."""
    return quiet() or not stderr.is_terminal


def info(message: str) -> None:
    if not quiet():
        stderr.print(escaped(message), markup=False)


def warn(message: str) -> None:
    if not quiet():
        stderr.print(f"warning: {escaped(message)}", style="yellow", markup=False)


def error(message: str) -> None:
    stderr.print(f"error: {one_line(message)}", style="bold red", markup=False)


def stopped(message: str) -> None:
    """A stop the user asked for (Ctrl-C): said plainly, not as an error, even with --quiet."""
    stderr.print(escaped(message), style="yellow", markup=False)


def default_used(option: str, value: Any) -> None:
    """Say once per invocation which default stood in for an option the user left out."""
    if option in _state["defaults_shown"]:
        return
    _state["defaults_shown"].add(option)
    info(f"using {option} {value} (default)")


def show(renderable: Any) -> None:
    """Print a rich table or panel on stderr unless quiet."""
    if not quiet():
        stderr.print(renderable)


def plural(n: int, noun: str) -> str:
    """'1 face', '3 faces'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def data_out(line: str) -> None:
    """One line of data on stdout (CSV, JSON)."""
    sys.stdout.write(line + "\n")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
