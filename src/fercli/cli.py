"""The `fer` command line: each command parses its options and delegates to the core.

Nothing heavy is imported at module level, so that `fer --help` stays instant: torch, numpy and
matplotlib are imported inside the commands that need them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from fercli import __version__, console
from fercli.errors import INTERRUPTED, FerError

app = typer.Typer(
    name="fer",
    help="Facial expression recognition on FER2013-style data: prep, train, eval, predict, explain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_debug = {"on": bool(os.environ.get("FER_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        print(f"fercli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing on stderr but errors."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors (or set FER_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    console.reset(quiet=quiet)
    _debug["on"] = _debug["on"] or debug


def _data_path(data: Path | None) -> str:
    from fercli.prepared import DEFAULT_DATA

    if data is None:
        console.default_used("--data", DEFAULT_DATA)
        return DEFAULT_DATA
    return str(data)


@app.command()
def prep(
    sources: list[str] = typer.Argument(
        None, help="CSV files (fer2013.csv, train.csv, test.csv; gzip ok), image folders or zips, or - for stdin."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Prepared file to write [fer-data.safetensors]."),
    val_frac: float = typer.Option(0.1, help="Fraction of train carved out as val when no source has a val split."),
    seed: int = typer.Option(0, help="Seed for the val carve and for --synthetic."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows and images instead of stopping."),
    synthetic: int = typer.Option(0, help="Add N built-in synthetic cartoon faces (a toy set, not FER2013)."),
) -> None:
    """Read FER2013 in any layout into one prepared data file that the other commands open instantly."""
    from fercli.prep import counts_table, prepare
    from fercli.prepared import DEFAULT_DATA

    if out is None:
        console.default_used("--out", DEFAULT_DATA)
    target = str(out or DEFAULT_DATA)
    meta = prepare(sources or [], target, val_frac=val_frac, seed=seed, skip_bad=skip_bad, synthetic=synthetic)
    console.show(counts_table(meta))
    console.info(f"wrote {target}")


def main() -> None:
    """Console-script entry: run the app, map FerError to its exit code, keep pipes quiet."""
    try:
        app(standalone_mode=False)
    except FerError as e:
        if _debug["on"]:
            raise
        console.error(str(e))
        sys.exit(e.code)
    except BrokenPipeError:
        # The reader went away (`fer predict ... | head`): stop quietly, as a SIGPIPE'd tool does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(INTERRUPTED)
    except Exception as e:  # click's own usage errors and aborts
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            console.error("aborted")
            sys.exit(INTERRUPTED)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise
