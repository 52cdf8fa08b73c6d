"""JSONL reading and writing with errors that name the file and line: one reader for every JSONL the kit touches."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A JSONL file has a line that is not a JSON object; the message names ``file:line``."""


def iter_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, object)`` for each non-empty line of ``path`` (numbers count every line); a
    :class:`JsonlError` names ``path:line`` for invalid JSON (too-deep nesting and integers over 4300 digits included),
    a non-UTF-8 byte or a non-object. With ``allow_torn_tail`` an unparseable last line without a newline (a write cut
    off by a crash) is dropped with a warning.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        lines = fh.read().split(b"\n")
    # split() leaves '' after a final newline; a non-empty last item had no newline.
    last = len(lines)
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonlError(f"{path}:{lineno}: not valid UTF-8 "
                             f"(byte {raw[e.start]:#04x} at column {e.start + 1})") from None
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, or an int over 4300 digits
            why = (f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError)
                   else "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0])
            if allow_torn_tail and lineno == last:
                log.warning("%s:%d: dropping a torn last line (%d bytes, no newline): %s", path, lineno, len(raw), why)
                return
            raise JsonlError(f"{path}:{lineno}: invalid JSON ({why})") from None
        if not isinstance(obj, dict):
            raise JsonlError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_jsonl(path: str | os.PathLike, *, allow_torn_tail: bool = False) -> Iterator[dict]:
    """Yield the JSON objects of ``path``, one per non-empty line (see :func:`iter_jsonl` for the errors)."""
    return (obj for _, obj in iter_jsonl(path, allow_torn_tail=allow_torn_tail))


def dumps_line(record: dict) -> str:
    """One JSONL line (with newline); keys sorted so files diff and hash stably."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` by a synced temporary file and a rename: a crash leaves the old file or the new.
    The temporary file's name is unique, so two processes writing one file (two scripts opening one run) never rename
    each other's."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would make every run file private
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_bytes(path: Path, data: bytes) -> None:
    """Append ``data`` (whole lines) to ``path`` in one synced ``O_APPEND`` write: a crash loses at most these lines,
    never glues two. A short write (disk full) is rolled back to the old end of the file, so a caller that goes on
    appending writes clean lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            n = os.write(fd, data)
        except OSError:
            os.ftruncate(fd, size)
            raise
        if n != len(data):
            os.ftruncate(fd, size)
            raise OSError(f"{path}: short write ({n} of {len(data)} bytes; is the disk full?); "
                          "the partial line was removed")
        os.fsync(fd)
    finally:
        os.close(fd)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write ``records`` to ``path`` atomically (:func:`atomic_write_text`). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [dumps_line(rec) for rec in records]
    atomic_write_text(path, "".join(lines))
    return len(lines)
