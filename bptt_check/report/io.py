"""Writing report files atomically: a reader sees the old file or the new one, never half of one.

Every file goes through a uniquely named temporary file in the same folder (``mkstemp``: two
runs, or two workers, never share one) and ``os.replace``. A run's files are written as a set
(:func:`write_set`): every file is rendered and written to its temporary file first, and only when
all of them are on disk are they renamed into place, and the files of formats this run did not
write removed — a failure before that (disk full, no permission, ``report.json`` being a folder)
leaves the previous set as it was, never new JSON beside an old HTML page that says OK. Two runs
writing into the same folder each hold :func:`report_lock` while writing their set of files, so the
folder ends up with one run's complete set, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: renames are still atomic, sets are not locked
    fcntl = None  # type: ignore[assignment]


# the process umask, read once at import (os.umask can only be read by setting it)
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)     # a report is a normal file (mkstemp makes it 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_set(files: dict[Path, str | Callable[[IO[str]], None]], stale: Iterable[Path] = ()) -> None:
    """Replace a set of files as a whole: all written to temporary files first, then renamed, then the
    ``stale`` files (an earlier run's other formats) removed. An error before the renames leaves every
    old file as it was (and no temporary file). A file's content is its text, or a function that writes
    it to the open file (a report of any length, streamed)."""
    temps: dict[Path, str] = {}
    try:
        for path in [*files, *stale]:
            if path.is_dir() and not path.is_symlink():
                raise IsADirectoryError(errno.EISDIR, "a folder is in the way of a report file", str(path))
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps[path] = tmp
            os.chmod(tmp, 0o666 & ~_UMASK)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                if callable(text):
                    text(fh)
                else:
                    fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        for path, tmp in temps.items():
            os.replace(tmp, path)
        temps.clear()
        for path in stale:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for folder in {p.parent for p in files}:
            _fsync_dir(folder)
    finally:
        for tmp in temps.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def report_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on the report folder (created if needed) while writing a set of files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield folder
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(fd)   # closing releases the lock


def writable_folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why reports could not be written to ``folder`` (checked before a run, creating nothing), or None."""
    path = Path(folder)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"report folder {str(folder)!r}: {str(probe)!r} is a file, not a folder"
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        return f"report folder {str(folder)!r}: no permission to write in {str(probe)!r}"
    return None
