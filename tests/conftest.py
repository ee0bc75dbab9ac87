"""Shared fixtures: small data made by the tests themselves, and an in-process `fer` runner."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Cases run by the property-based bad-input suite, by kind; reported at the end of the run.
BAD_INPUT_CASES: Counter = Counter()


def pytest_terminal_summary(terminalreporter) -> None:
    for suite, prefix in (("bad-input", ""), ("hostile-input", "hostile-")):
        counts = {k.removeprefix(prefix): n for k, n in BAD_INPUT_CASES.items()
                  if k.startswith("hostile-") == bool(prefix)}  # fmt: skip
        if counts:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
            terminalreporter.write_line(f"{suite} suite: {sum(counts.values())} cases ran ({kinds})")


# The real FER2013 files: FER_DATA names their folder, else ../shared/data/fer2013 beside the checkout.
SHARED = Path(os.environ.get("FER_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013")
FER_ZIP = SHARED / "fer2013.zip"
NO_REAL_DATA = f"real FER2013 files not in {SHARED} (FER_DATA names their folder)"  # skip reason


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """The CPU precision probe caches its answer under XDG_CACHE_HOME: keep the user's cache untouched."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def fer(capsys, monkeypatch):
    """Run `fer ARGS...` in this process; returns exit code, stdout and stderr."""
    from fercli import cli

    def run(*args: str) -> Result:
        monkeypatch.setattr(sys, "argv", ["fer", *map(str, args)])
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@contextlib.contextmanager
def counted_case(kind: str, hang_s: float = 30) -> Iterator[Path]:
    """One case of a property-based suite: counted under `kind`, in its own empty folder, under an alarm
    that turns a hang into a failure."""
    BAD_INPUT_CASES[kind] += 1

    def hang(signum, frame):
        raise TimeoutError(f"{kind} case ran over {hang_s} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, hang_s)
    try:
        with tempfile.TemporaryDirectory() as d:
            yield Path(d)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fer_in_process(*args: object) -> tuple[int, str, str]:
    """`fer ARGS` in this process: (exit code, stderr, stdout). Exceptions other than SystemExit escape.
    Usable inside hypothesis tests (no function-scoped fixture)."""
    import io

    from fercli import cli

    err, out, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["fer", *map(str, args)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                cli.main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, err.getvalue(), out.getvalue()


def untrained_checkpoint(path: Path, classes: tuple[str, ...] | None = None,
                         train_faces: np.ndarray | None = None) -> Path:  # fmt: skip
    """An untrained vgg4s at 1/8 width, of FER2013's 7 classes unless `classes` says others, holding the
    training-face thumbnails `train_faces` if given: the fastest checkpoint to load and predict with."""
    from fercli import models
    from fercli.classes import CLASSES, IMAGE_SIZE
    from fercli.files.checkpoint import save_checkpoint

    classes = CLASSES if classes is None else classes
    net = models.create("vgg4s", len(classes), width=0.125)
    meta = {"arch": "vgg4s", "arch_args": {"width": 0.125}, "classes": list(classes), "image_size": IMAGE_SIZE,
            "normalize": {"mean": 0.5, "std": 0.25}}  # fmt: skip
    save_checkpoint(path, net.state_dict(), meta, train_faces=train_faces)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained vgg4s at 1/8 width (FER2013's 7 classes): the fastest checkpoint to predict with."""
    return untrained_checkpoint(tmp_path_factory.mktemp("tiny") / "model.safetensors")


def fer_subprocess(*args: str, input: bytes | None = None, env: dict | None = None, cwd=None):
    """Run the real console entry point in a child (stdin pipes, signals, fresh imports)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fercli", *map(str, args)], input=input, capture_output=True, env=full_env, cwd=cwd
    )


def faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from fercli.data.synthetic import synthetic_faces

    return synthetic_faces(n, seed)


def pixels_text(img: np.ndarray) -> str:
    return " ".join(map(str, img.reshape(-1).tolist()))


def write_csv(path: Path, header: str, rows: list[str], newline: str = "\n", bom: bool = False, gz: bool = False):
    text = ("\ufeff" if bom else "") + newline.join([header, *rows]) + newline
    data = text.encode()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def read_all_faces(path: Path, block: int, skip_bad: bool, python_only: bool) -> tuple:
    """Everything CsvFaces yields for a file, ("ok", image bytes, labels, splits, ids, bad count, first
    bad rows), or ("error", message). `python_only` turns the numpy block splitter off."""
    from fercli.data.csvfaces import CsvFaces
    from fercli.errors import FerError

    split_clean = CsvFaces._split_clean
    if python_only:
        CsvFaces._split_clean = lambda self, block: None
    try:
        reader = CsvFaces(str(path), skip_bad=skip_bad, block_bytes=block)
        chunks = list(reader)
    except FerError as e:
        return ("error", str(e))
    finally:
        CsvFaces._split_clean = split_clean
    if not chunks:
        return ("ok", b"", [], [], [], reader.bad.count, reader.bad.first)
    return (
        "ok",
        np.concatenate([c.images for c in chunks]).tobytes(),
        np.concatenate([c.labels for c in chunks]).tolist(),
        np.concatenate([c.splits for c in chunks]).tolist(),
        [i for c in chunks for i in c.ids],
        reader.bad.count,
        reader.bad.first,
    )


def interrupted_run(data: Path, project: Path, stop_at_step: int, **recipe: object) -> Path:
    """A run stopped before `stop_at_step`, as Ctrl-C leaves it: its folder, with a last.safetensors
    that holds the resume state."""
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train
    from fercli.errors import INTERRUPTED, FerError

    r = build_recipe("default", {**recipe, **NO_AUGMENT})
    settings = RunSettings(data=str(data), device="cpu", project=str(project), progress=False,
                           stop_at_step=stop_at_step)  # fmt: skip
    with pytest.raises(FerError) as e:
        train(r, settings)
    assert e.value.code == INTERRUPTED
    return project / "train" / "exp"


@pytest.fixture
def fer2013_csv(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small fer2013.csv: 70 Training, 14 PublicTest, 14 PrivateTest rows."""
    images, labels = faces(98)
    usage = ["Training"] * 70 + ["PublicTest"] * 14 + ["PrivateTest"] * 14
    rows = [f"{lab},{pixels_text(img)},{u}" for img, lab, u in zip(images, labels, usage)]
    return write_csv(tmp_path / "fer2013.csv", "emotion,pixels,Usage", rows), images, labels


@pytest.fixture(scope="session")
def trained_synthetic(tmp_path_factory) -> tuple[str, Path, Path, dict]:
    """vgg4s trained 3 epochs on 2,800 synthetic faces (about 15 s on 2 CPU cores), made once per session:
    (best checkpoint, data file, runs folder, the train() summary)."""
    from fercli.data.prep import prepare
    from fercli.engine.recipe import NO_AUGMENT, build_recipe
    from fercli.engine.train import RunSettings, train

    base = tmp_path_factory.mktemp("trained")
    data = base / "d.safetensors"
    prepare([], str(data), synthetic=2800, seed=1)
    r = build_recipe("default", dict(arch="vgg4s", epochs=3, batch=32, lr=0.05, **NO_AUGMENT))
    out = train(r, RunSettings(data=str(data), device="cpu", project=str(base / "runs"), progress=False))
    return f"{out['run_dir']}/best.safetensors", data, base / "runs", out


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A prepared file of 1,400 synthetic faces, made once per test session."""
    from fercli.data.prep import prepare

    path = tmp_path_factory.mktemp("data") / "fer-data.safetensors"
    prepare([], str(path), synthetic=1400, seed=0)
    return path
