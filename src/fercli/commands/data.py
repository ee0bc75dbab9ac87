"""`fer prep`: sources in, one prepared file out."""

from __future__ import annotations

from pathlib import Path

import typer

from fercli import console
from fercli.commands.app import (
    app,
    completion,
)


@app.command()
def prep(
    sources: list[str] = typer.Argument(
        None, help="CSV files (fer2013.csv, train.csv, test.csv; gzip ok), image folders or zips, or - for stdin."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Prepared file to write (default fer-data.safetensors)."),
    val_frac: float = typer.Option(0.1, help="Fraction of train carved out as val when no source has a val split."),
    seed: int = typer.Option(0, help="Seed for the val carve and for --synthetic."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad rows and images instead of stopping."),
    synthetic: int = typer.Option(0, help="Add N built-in synthetic cartoon faces (a toy set, not FER2013)."),
    protocol: str = typer.Option(
        "auto",
        help="FER2013 splits: standard (PublicTest is val, PrivateTest test), holdout (PublicTest is test, val "
        "carved from Training), auto (standard when PrivateTest is present, else holdout).",
        autocompletion=completion(("auto", "standard", "holdout")),
    ),
    dedup: bool = typer.Option(
        False, "--dedup", help="Drop val and test faces that copy a train face (exact or re-encoded)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT that holds other prepared data."),
) -> None:
    """Read FER2013 in any layout into one prepared data file that the other commands open instantly."""
    from fercli.data.prep import counts_table, prepare, votes_table
    from fercli.data.prepared import DEFAULT_DATA

    target = str(out or DEFAULT_DATA)
    meta = prepare(sources or [], target, val_frac=val_frac, seed=seed, skip_bad=skip_bad, synthetic=synthetic,
                   protocol=protocol, dedup=dedup, force=force)  # fmt: skip
    console.show(counts_table(meta))
    if meta.get("votes"):
        console.show(votes_table(meta))
    console.info(f"wrote {target}" + (" (the default --out)" if out is None else ""))
