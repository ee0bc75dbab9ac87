"""Run folders: `<project>/train/<name>`, auto-incremented (exp, exp2, exp3, ...), finding the newest, and
the one resolver every command uses to turn MODEL or --resume into a checkpoint path."""

from __future__ import annotations

import re
from pathlib import Path

from fercli.defaults import PROJECT as DEFAULT_PROJECT
from fercli.errors import IO_ERROR, NOT_FOUND, FerError
from fercli.files.atomic import why


def new_run_dir(project: str | Path, name: str = "exp") -> Path:
    """Create and return the first free `<project>/train/<name>[N]` folder."""
    base = Path(project) / "train"
    n = 1
    while True:
        path = base / (name if n == 1 else f"{name}{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
        except OSError as e:
            raise FerError(f"{path}: cannot create the run folder ({why(e)})", IO_ERROR) from e


def latest_run(project: str | Path = DEFAULT_PROJECT, need: str = "best.safetensors") -> Path:
    """The most recently modified run folder under `<project>/train` that holds `need`."""
    base = Path(project) / "train"
    runs = [p for p in base.glob("*") if (p / need).exists()] if base.is_dir() else []
    if not runs:
        raise FerError(f"no trained model found under {base}/ (run `fer train` first, or name a MODEL)", NOT_FOUND)
    return max(runs, key=lambda p: ((p / need).stat().st_mtime, _natural(p.name)))


def _natural(name: str) -> tuple[str, int]:
    m = re.match(r"(.*?)(\d*)$", name)
    assert m is not None
    return m.group(1), int(m.group(2) or 1)


def is_model_ref(ref: str) -> bool:
    """Whether `ref` names a model rather than data: `builtin` (unless a file or folder has that name), a
    .safetensors file that is a checkpoint, or a run folder."""
    p = Path(ref)
    if ref == "builtin":
        return not p.exists()
    if p.is_dir():
        return (p / "best.safetensors").exists() or (p / "last.safetensors").exists()
    if p.suffix.lower() == ".safetensors" and p.is_file():
        from fercli.files.checkpoint import META_KEY
        from fercli.files.safefile import read_header

        try:
            return META_KEY in read_header(p)[1]
        except FerError:
            return False
    return False


def resolve_checkpoint(ref: str | Path | None, project: str | Path = DEFAULT_PROJECT, resume: bool = False) -> Path:
    """A checkpoint path from what users type. For a model (eval, predict, the explanations): a file, a run
    folder (its best, else its last), `builtin` for the model the package ships, or None for the newest
    run's best. For `--resume`: a file, a run
    folder's last.safetensors, or `last` for the newest run that has one."""
    from fercli import console

    want = "last.safetensors" if resume else "best.safetensors"
    if ref is None or (resume and str(ref) == "last"):
        path = latest_run(project, need=want) / want
        if ref is None:
            console.default_used("MODEL", path)
        return path
    p = Path(ref)
    if not resume and str(ref) == "builtin" and not p.exists():  # a file or folder named builtin wins
        from fercli.builtin import BUILTIN_PATH

        if not BUILTIN_PATH.exists():
            raise FerError(f"the built-in model is missing from this installation ({BUILTIN_PATH})", NOT_FOUND)
        return BUILTIN_PATH
    if p.is_dir():
        for name in (want,) if resume else ("best.safetensors", "last.safetensors"):
            if (p / name).exists():
                return p / name
        if resume:
            raise FerError(f"{p / want}: nothing to resume (no such last.safetensors)", NOT_FOUND)
        raise FerError(f"{p}: run folder holds no best.safetensors or last.safetensors", NOT_FOUND)
    if not p.exists():
        raise FerError(f"{p}: nothing to resume (no such last.safetensors)" if resume else f"{p}: no such checkpoint",
                       NOT_FOUND)  # fmt: skip
    return p
