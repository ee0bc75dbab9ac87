"""Where outputs may go: a path that comes from data stays inside the output folder, and no output ever
replaces one of the command's inputs.

Two rules, one per kind of danger:
  member_path   a name from data (a zip member, a folder entry) becomes an output path only as a clean
                relative path: absolute paths, drive letters, backslashes and `..` parts are refused;
                `inside` then checks the resolved path (symlinks followed) against the output folder.
  inputs        every reader notes the files it opens (`note_input`); `atomic.atomic_path` refuses to
                replace any of them. The notes live for one `guarded()` scope: one CLI invocation, or
                one call of the Python API, so a later call may rewrite what an earlier one read. A
                folder the command owns (`fer train`'s run folder, whose checkpoints it reads back and
                rewrites) is exempt: `owns(folder)`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fercli.errors import BAD_INPUT, USAGE, FerError


@dataclass
class _Scope:
    inputs: set[tuple[int, int]] = field(default_factory=set)  # (device, inode) of each file read
    owned: list[str] = field(default_factory=list)  # real paths of folders whose files may be rewritten


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("fer_inputs", default=None)
_DRIVE = re.compile(r"^[A-Za-z]:")


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """A scope in which the inputs noted are protected from being overwritten."""
    token = _scope.set(_Scope())
    try:
        yield
    finally:
        _scope.reset(token)


def owns(folder: str | os.PathLike) -> None:
    """The command writes and reads back the files of `folder` (a run folder): rewriting them is its job."""
    if (scope := _scope.get()) is not None:
        scope.owned.append(os.path.realpath(folder))


def _key(path: str | os.PathLike, follow: bool = True) -> tuple[int, int] | None:
    try:
        st = os.stat(path, follow_symlinks=follow)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _keys(path: str | os.PathLike) -> set[tuple[int, int]]:
    """The file a path names and, for a symbolic link (dangling ones too), the link itself."""
    return {k for k in (_key(path), _key(path, follow=False)) if k is not None}


def note_input(path: str | os.PathLike) -> None:
    """Remember that this scope reads `path`: a file, or a folder and every file in it."""
    scope = _scope.get()
    if scope is None:
        return
    scope.inputs |= _keys(path)
    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for f in files:
                scope.inputs |= _keys(os.path.join(root, f))


def is_input(path: str | os.PathLike) -> bool:
    """Whether `path` exists and is (the same file as) one this scope has read, outside a folder it owns."""
    scope = _scope.get()
    if scope is None or not _keys(path) & scope.inputs:
        return False
    real = os.path.realpath(path)
    return not any(_within(folder, real) for folder in scope.owned)


def _within(real_root: str, real: str) -> bool:
    """Whether the resolved path `real` is `real_root` or lies below it."""
    return os.path.commonpath([real_root, real]) == real_root


def refuse_input(dest: str | os.PathLike, option: str = "the output") -> None:
    """USAGE error when writing `dest` would replace one of the inputs."""
    if is_input(dest):
        raise FerError(f"{dest}: {option} is one of the inputs; writing it would destroy it (choose another)", USAGE)


def member_path(name: str, where: str) -> PurePosixPath:
    """A data-given relative name (zip member, folder entry) as a clean relative path, or a one-line error
    naming `where` (the archive or folder) and the member."""
    p = PurePosixPath(name)
    why = None
    if "\\" in name:
        why = "a backslash in its path"
    elif name.startswith("/") or p.is_absolute():
        why = "an absolute path"
    elif _DRIVE.match(name):
        why = "a drive letter"
    elif ".." in p.parts:
        why = "a '..' part"
    elif "\x00" in name or not p.parts:
        why = "an unusable name"
    if why:
        raise FerError(f"{where} member {name}: refusing a member name with {why} (it could write outside -o)",
                       BAD_INPUT)  # fmt: skip
    return p


def inside(root: Path, rel: PurePosixPath, where: str) -> Path:
    """root / rel, after checking that it resolves (symlinks in root followed) to a place inside root."""
    dest = root / rel
    real = os.path.realpath(dest)
    if not _within(os.path.realpath(root), real):
        raise FerError(f"{where}: output {dest} would resolve outside {root} ({real}); refusing it", USAGE)
    return dest
