"""Atomic output files: write to a temporary name in the same folder, then rename over the target.

A crash, `kill -9`, Ctrl-C or full disk leaves either the old file or the new one, never half of one
(a killed writer can leave its hidden temporary `.<name>.<random>.tmp` beside it; `fer train --resume`
clears those in its run folder).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fercli.errors import IO_ERROR, USAGE, FerError
from fercli.files.safepaths import refuse_input


def why(e: OSError) -> str:
    """The reason a write failed, in the words a user acts on."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if e.errno == errno.EFBIG:
        return "file too large for this disk or the file size limit"
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return e.strerror or str(e)


TMP_SUFFIX = ".tmp"  # temporaries are `.<name>.<random>.tmp`: hidden, beside their target


def clear_leftovers(folder: Path) -> None:
    """Remove the temporaries a killed writer left in `folder` (call only where one writer works)."""
    for tmp in folder.glob(f".*{TMP_SUFFIX}"):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the first write will say so


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success it replaces `dest` in one rename. `keep_suffix`: the
    temporary ends in dest's suffix too, for writers that pick the format by it (OpenCV's video writer).

    `dest` is never one of the command's inputs (safepaths.refuse_input, checked before and at the rename).
    An existing `dest` that is not a regular file (a FIFO, a device such as /dev/stdout, a socket) is
    written directly, never replaced: a special file is somebody else's."""
    dest = Path(dest)
    refuse_input(dest)
    if dest.is_dir():
        raise FerError(f"{dest}: is a folder, expected a file name", USAGE)
    if dest.exists() and not dest.is_file():
        try:
            yield dest
        except BrokenPipeError:
            raise
        except OSError as e:
            raise FerError(f"{dest}: could not write ({why(e)})", IO_ERROR) from e
        return
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=TMP_SUFFIX + (dest.suffix if keep_suffix else ""),
                                   dir=dest.parent)  # fmt: skip
        os.close(fd)
    except OSError as e:
        raise FerError(f"{dest}: cannot write here ({why(e)})", IO_ERROR) from e
    tmp = Path(tmp)
    try:
        yield tmp
        refuse_input(dest)  # an input the body opened after we started
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, dest)
    except BrokenPipeError:
        raise  # stdout's reader went away: not this file's fault (the edge ends quietly)
    except OSError as e:
        raise FerError(f"{dest}: could not write ({why(e)}); any previous {dest.name} is intact", IO_ERROR) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
