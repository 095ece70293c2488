"""The one way files are written: into a temporary file in the target folder, then renamed into place, so a
reader (or a crash) never sees half a file. Every writer of the trainer — LoRAs, reports, JSON, images — uses it.

`atomic_path(path)` yields the temporary path for writers that want a file name (safetensors, PIL); the others
write text or bytes; `atomic_folder(path)` does the same for a folder of files (a training state). With
`overwrite=False` the final name is created exclusively (a hard link, which fails when the name exists), so two
writers of the same name never silently replace each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


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
LOCK_SUFFIX = ".lock"
HOST = socket.gethostname()
# `.<name>.<pid>-<random>.tmp`: the writer's pid, so a later run can tell a killed writer's temp file from a live one's
_TEMP_NAME = re.compile(r"^\..*\.(\d+)-[a-z0-9_]{4,}" + re.escape(TEMP_SUFFIX) + "$", re.DOTALL)
STALE_TEMP_AGE_S = 60  # and untouched this long: a writer on another machine sharing the folder keeps its file


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary path beside `path`; when the block succeeds, it becomes `path` (mode 0o666 & ~umask).

    FileExistsError when `overwrite` is False and `path` exists (checked at the rename, not before it).
    On any error the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
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


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = True):
    """Yield a temporary folder beside `path`; when the block succeeds, its files are flushed and it becomes `path`
    (one rename), so a reader sees the whole folder or none of it. An existing `path` is replaced only with
    `overwrite` (moved aside, the new one renamed in, the old one removed), else FileExistsError; on any error the
    temporary folder is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        for entry in tmp.iterdir():
            _flush(entry)
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes the folder private; the result follows the umask
        if not os.path.lexists(path):
            os.rename(tmp, path)  # onto a name made meanwhile: refused unless it is an empty folder
        elif not overwrite:
            raise FileExistsError(f"{path} exists")
        else:
            aside = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent))
            os.replace(path, aside)  # onto the empty folder just made
            os.rename(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _temp_prefix(path: Path) -> str:
    """`.<name>.<pid>-`: the temp names remove_stale_temps recognises."""
    return f".{_short(path.name)}.{os.getpid()}-"


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


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True when unsure: a lock is then kept, never stolen)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5  # access denied: it exists
        try:
            code = ctypes.c_ulong()
            return not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) or code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temp files and folders `atomic_path` / `atomic_folder` left in `folder` when their writer was
    killed (its pid is gone, and the entry has not changed for a minute); those of live writers stay. Returns what
    was removed."""
    import time

    removed, now = [], time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if not match or pid_alive(int(match.group(1))):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime <= STALE_TEMP_AGE_S:
                continue
            if entry.is_dir(follow_symlinks=False):  # an atomic_folder's
                shutil.rmtree(entry.path)
            elif entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
            else:
                continue
            removed.append(Path(entry.path))
            log.info("removed %s (left by a writer that was stopped)", entry.path)
        except OSError:
            pass
    return removed


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


class Reservation:
    """An output name held by one job: the lock file `.<name>.lock` beside it, holding `pid host token`."""

    def __init__(self, path: Path, lock: Path, content: str, created: list[Path]):
        self.path, self.lock, self._content, self._created = path, lock, content, created

    def release(self) -> None:
        """Remove the lock if it is still ours, and the folders the reservation made if they stayed empty."""
        try:
            if self.lock.read_text(encoding="utf-8") == self._content:
                self.lock.unlink()
        except OSError:
            pass
        for folder in self._created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def reserve_name(path: str | os.PathLike) -> Reservation:
    """Reserve the output `path` for this job: create its lock file exclusively (the content is whole when the
    name appears: written to a temp file, then linked). A lock whose process is gone (same host) is taken over.
    UserError when another live job holds it, or the folder cannot be written."""
    from .errors import UserError

    path = Path(path)
    lock = lock_path(path)
    content = f"{os.getpid()} {HOST} {secrets.token_hex(8)}\n"
    created = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                write_text_atomic(lock, content, overwrite=False)
                return Reservation(path, lock, content, created)
            except FileExistsError:
                pass
            held = _read(lock)
            if held is None:
                continue  # released meanwhile: try again
            if not _stale(held):
                pid = held.split()[0] if held.split() else "?"
                raise UserError(f"another job is writing {path} (process {pid}; if none is, delete {lock}); "
                                f"choose another save_lora_name")
            _take_over(lock, held)
    except OSError as err:
        raise UserError(f"cannot write in {path.parent} ({err.strerror or err})") from None
    raise UserError(f"cannot reserve {path}: its lock {lock} keeps changing; try again")


def _read(lock: Path) -> str | None:
    try:
        return lock.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _stale(content: str) -> bool:
    parts = content.split()
    if len(parts) < 2 or not parts[0].isdigit():
        return False  # not ours to judge: kept
    return parts[1] == HOST and not pid_alive(int(parts[0]))


def _take_over(lock: Path, stale: str) -> None:
    """Move the stale lock aside (atomic), and put it back if what was moved is not the stale one (another job
    took it over first)."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    try:
        if _read(aside) != stale:
            with contextlib.suppress(OSError):
                os.link(aside, lock)
    finally:
        aside.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite)


def write_json_atomic(path: str | os.PathLike, data, overwrite: bool = True) -> Path:
    """JSON as upstream writes it (indent 4), non-ASCII kept readable."""
    return write_text_atomic(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n", overwrite)
