"""Every CSV row and header fercli writes, RFC 4180 style: a field holding a comma, a double quote, CR or
LF is quoted, its quotes doubled. Text from data (ids, file and member names, class names) goes through
`field`, so a hostile name can never shift a column.

File names are bytes on POSIX; Python hands undecodable bytes over as lone surrogates, which no UTF-8
writer can encode. `field` writes them as `\\xNN` escapes: the output stays valid UTF-8 on any stream and
still names the file unambiguously.
"""

from __future__ import annotations

from collections.abc import Iterable

_SPECIAL = (",", '"', "\n", "\r")


def text(value: object) -> str:
    """str(value) with undecodable bytes (lone surrogates from the file system) as `\\xNN` escapes."""
    s = str(value)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def field(value: object) -> str:
    """One CSV field, quoted when it must be."""
    s = text(value)
    if any(ch in s for ch in _SPECIAL):
        return '"' + s.replace('"', '""') + '"'
    return s


def line(values: Iterable[object]) -> str:
    """One CSV line from fields, without its newline (for console.data_out)."""
    return ",".join(field(v) for v in values)


def row(values: Iterable[object]) -> str:
    """One CSV line with its newline."""
    return line(values) + "\n"
