"""The `fer` command line's edge: run the app (fercli/commands/), map FerError to its one-line message and
exit code, keep pipes quiet, and end torchrun ranks safely.

Nothing heavy is imported at module level, so that `fer --help` stays instant: torch, numpy and
matplotlib are imported inside the commands that need them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

from fercli import console
from fercli.commands import app, debug_on
from fercli.errors import INTERNAL, INTERRUPTED, PIPE_CLOSED, FerError, Stopped
from fercli.files.safepaths import guarded

GLOBAL_FLAGS = {"-q": "--quiet", "--quiet": "--quiet", "--debug": "--debug"}


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Let `--quiet`/`-q`, `--debug` and `--threads N` stand anywhere (`fer prep x.csv -q`), as users type them."""
    cut = argv.index("--") if "--" in argv else len(argv)
    head, rest, valued = argv[:cut], [], []
    i = 0
    while i < len(head):
        a = head[i]
        if a == "--threads" and i + 1 < len(head):
            valued += head[i : i + 2]
            i += 2
            continue
        if a.startswith("--threads="):
            valued.append(a)
        else:
            rest.append(a)
        i += 1
    flags = sorted({GLOBAL_FLAGS[a] for a in rest if a in GLOBAL_FLAGS})
    return flags + valued + [a for a in rest if a not in GLOBAL_FLAGS] + argv[cut:]


def main() -> NoReturn:
    """Console-script entry: run the app, map FerError to its exit code, keep pipes quiet."""
    _exit(_run())


class _GuardedStdout:
    """sys.stdout whose reader going away raises Stopped (exit 141, quietly) instead of BrokenPipeError, an
    OSError that click would turn into exit 1 and that an output's error handling could blame on a file."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise Stopped("", PIPE_CLOSED) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise Stopped("", PIPE_CLOSED) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _stop(signum: int, frame) -> None:
    raise Stopped("interrupted", INTERRUPTED)


@contextlib.contextmanager
def _edge() -> Iterator[None]:
    """For one invocation: SIGINT and SIGTERM raise Stopped (temporaries are removed on the way out; `fer
    train` installs its own handlers to save `last` first), SIGPIPE is left to Python (ignored: a closed
    stdout is a BrokenPipeError, turned into Stopped above), stdout is guarded, inputs are protected."""
    handlers = {signal.SIGINT: _stop, signal.SIGTERM: _stop}
    if hasattr(signal, "SIGPIPE"):
        handlers[signal.SIGPIPE] = signal.SIG_IGN
    old = {}
    for sig, handler in handlers.items():
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave signals alone
            pass
    stdout, sys.stdout = sys.stdout, _GuardedStdout(sys.stdout)
    try:
        with guarded():
            yield
    finally:
        sys.stdout = stdout
        for sig, handler in old.items():
            signal.signal(sig, handler)


@functools.cache
def _command():
    """The click command behind `app`, with help metavars people read: nothing after a flag (`--tta`, not
    `--tta <bool>`, which invites `--tta true`), and N, X, PATH or TEXT instead of Python type names."""
    import typer.main

    cmd = typer.main.get_command(app)
    groups = [cmd, *getattr(cmd, "commands", {}).values()]
    for c in groups:
        for p in c.params:
            if p.metavar is not None:
                continue
            if getattr(p, "is_flag", False):
                p.metavar = ""
                continue
            kind = str(getattr(getattr(p, "type_descriptor", None), "annotation", ""))
            word = next((w for key, w in (("int", "N"), ("float", "X"), ("Path", "PATH")) if key in kind), "TEXT")
            if p.param_type_name == "option":
                p.metavar = word
            else:  # an argument: its name column says it all
                p.metavar = p.name.upper()
                p.display_type_rich = lambda ctx: None
                usage = p.metavar + ("..." if p.nargs != 1 else "")
                p.get_usage_pieces = lambda ctx, u=usage, req=p.required: [u if req else f"[{u}]"]
        make_help = c.get_help_option

        def help_option(ctx, make_help=make_help):
            opt = make_help(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        c.get_help_option = help_option
    return cmd


def _run() -> int:
    try:
        with _edge():
            code = _command().main(args=_hoist_global_flags(sys.argv[1:]), prog_name="fer", standalone_mode=False)
        if code == INTERRUPTED:  # Typer turned a KeyboardInterrupt into a silent Exit(130)
            console.stopped("interrupted")
        return code if isinstance(code, int) else 0  # click returns typer.Exit's code here
    except FerError as e:
        if debug_on():
            raise
        if str(e):  # empty: already said (another torchrun rank)
            (console.stopped if e.code == INTERRUPTED else console.error)(str(e))
        return e.code
    except Stopped as e:
        if e.code == PIPE_CLOSED:
            # Later writes (the interpreter's last flush) go nowhere instead of raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            with contextlib.suppress(OSError, ValueError):
                os.dup2(devnull, sys.stdout.fileno())
        elif str(e):
            console.stopped(str(e))
        return e.code
    except KeyboardInterrupt:  # raised where our handler was not installed (another thread's signal setup)
        console.stopped("interrupted")
        return INTERRUPTED
    except Exception as e:
        # Typer's (vendored) click raises usage errors and aborts; they know how to show themselves.
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return e.exit_code
        if type(e).__name__ == "Abort":
            console.error("aborted")
            return INTERRUPTED
        if debug_on():
            raise
        # A bug, not the user's input: one line, never a traceback (--debug shows it).
        console.error(f"internal error ({type(e).__name__}: {str(e)[:200]}); please report it with the "
                      "traceback that --debug shows")  # fmt: skip
        return INTERNAL


def _exit(code: int) -> NoReturn:
    """End the process with `code`; a torchrun rank skips the interpreter's shutdown.

    After the last collective, gloo's worker thread may still be releasing that operation's tensors
    when the main thread reaches interpreter shutdown; the thread then takes the GIL during
    finalization and the process aborts (SIGABRT, "terminate called without an active exception",
    the rank seen as failed by torchrun; pytorch/pytorch#179291). Two-process gloo jobs on a 2-core
    CPU machine (`bench/torchrun_exit.py` and its earlier form): 6 of 76 aborted ending through the
    interpreter's shutdown, 0 of 114 ending here. Every file fer writes is closed (renamed into
    place) before this point, so only the standard streams need flushing.
    """
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1"):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader that went away, or a closed stream
                pass
        os._exit(code)
    sys.exit(code)
