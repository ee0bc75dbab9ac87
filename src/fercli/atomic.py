"""Atomic output files: write to a temporary name in the same folder, then rename over the target.

A crash, Ctrl-C or full disk leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fercli.errors import IO_ERROR, FerError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest` in one rename."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    except OSError as e:
        raise FerError(f"{dest}: cannot write here ({e.strerror or e})", IO_ERROR) from e
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, dest)
    except OSError as e:
        raise FerError(f"{dest}: could not write ({e.strerror or e})", IO_ERROR) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
