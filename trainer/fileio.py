"""The one way files are written: into a temporary file in the target folder, then renamed into place, so a
reader (or a crash) never sees half a file. Every writer of the trainer — LoRAs, reports, JSON, images — uses it.

`atomic_path(path)` yields the temporary path for writers that want a file name (safetensors, PIL); the others
write text or bytes. With `overwrite=False` the final name is created exclusively (a hard link, which fails when the
name exists), so two writers of the same name never silently replace each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    """The process umask, read once at import. Linux reports it in /proc (no change to the process state);
    elsewhere it is set and restored once, before any thread of ours exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary path beside `path`; when the block succeeds, it becomes `path` (mode 0o666 & ~umask).

    FileExistsError when `overwrite` is False and `path` exists (checked at the rename, not before it).
    On any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{_short(path.name)}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _flush(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes the file private; the result follows the umask
        if overwrite:
            os.replace(tmp, path)
        else:
            _create_exclusive(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _short(name: str, limit: int = 120) -> str:
    """At most `limit` bytes of `name` for the temporary name, so that it fits wherever `name` fits
    (names are limited in bytes: 255 on most file systems)."""
    data = name.encode("utf-8", "surrogateescape")
    return name if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _flush(tmp: Path) -> None:
    """The data on disk before the rename: without it a crash just after the rename can leave an empty file
    (delayed allocation), and the rename would have promised a whole one."""
    fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(tmp: Path, path: Path) -> None:
    """`tmp` becomes `path` only if `path` does not exist: a hard link, which the kernel refuses for an existing
    name, so no check-then-rename race. Where there are no hard links (FAT, exFAT, some network shares) the name is
    reserved with O_EXCL and the data renamed over the reservation; a reader may then see an empty file briefly."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no hard links here; if the folder itself is the problem, the O_EXCL open below says so
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        path.unlink(missing_ok=True)  # the empty reservation is ours
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)


def write_json_atomic(path: str | os.PathLike, data, overwrite: bool = True) -> Path:
    """JSON as upstream writes it (indent 4), non-ASCII kept readable."""
    return write_text_atomic(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n", overwrite)
