"""Run folders that survive concurrent writers, full disks and unwritable places.

- :class:`RunLock`: one writer per run folder. The lock file ``DIR/.realfill.lock`` holds the writer's
  process id, host, command and start time, and is held with the operating system's lock (``filelock``:
  ``flock`` on Linux and macOS, ``LockFileEx`` on Windows) while the writer runs, so the system frees it
  when the process dies, however it dies. A second writer is refused
  (:class:`RunFolderBusy`, a :class:`UserError`: one line naming the holder, exit 2) before it touches
  anything; a lock file left by a dead process on this host is taken over with a one-line note.
- :func:`check_writable`: the place a run will write is probed (a temporary file created and removed in
  the deepest folder that exists) before any weights load: read-only file systems, permissions, ``/proc``,
  ``/sys`` and paths through a file are one line naming the path and why (:class:`UnwritablePlace`).
- Every write inside is atomic, and a full disk is one line (:mod:`realfill.atomic`).

Temporary names contain ``.realfill-tmp-``; a writer that takes the lock removes any such leftover of a
killed writer (:func:`sweep_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from filelock import FileLock, SoftFileLock, Timeout

from realfill.atomic import TEMP_MARK, OutOfSpace, free_bytes, is_out_of_space, space_failure
from realfill.errors import UserError
from realfill.layout import CHECKPOINT_BUILDING

LOCK_FILE = ".realfill.lock"


class RunFolderBusy(UserError):
    """Another live process holds the run folder's lock."""


class UnwritablePlace(UserError):
    """The run cannot write where it was asked to."""


# -- where a run writes ------------------------------------------------------------------------------

_WHY = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted",
        errno.ENOTDIR: "a part of the path is not a folder", errno.ENOENT: "cannot create entries there",
        errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded"}


def _check_name_lengths(path: Path, existing: Path, flag: str) -> None:
    """One line, not an ``OSError: File name too long`` traceback later, for a name past the file system's
    limit (``NAME_MAX``, 255 bytes on most; ``PATH_MAX`` for the whole path)."""
    def limit(name: str, default: int) -> int:
        try:
            return os.pathconf(existing if existing.is_dir() else existing.parent, name)
        except (OSError, ValueError, AttributeError):  # AttributeError: no pathconf (Windows)
            return default

    name_max = limit("PC_NAME_MAX", 255)
    for part in path.parts:
        if len(os.fsencode(part)) > name_max:
            raise UnwritablePlace(f"{flag} {path}: cannot write there (a name of {len(os.fsencode(part))} bytes, "
                                  f"more than the {name_max} the file system allows); choose a shorter {flag}")
    path_max = limit("PC_PATH_MAX", 4096)
    if len(os.fsencode(os.path.abspath(path))) + 64 > path_max:  # room for the files inside
        raise UnwritablePlace(f"{flag} {path}: cannot write there (the path is too long for the file system's "
                              f"{path_max} bytes); choose a shorter {flag}")


def check_writable(path: Path, *, flag: str = "--out") -> None:
    """Raise :class:`UnwritablePlace` unless a run can create ``path`` (a folder) and write inside it:
    the deepest part of it that exists must be a folder where a file can be created. A parent is probed
    with a temporary file, removed at once (``/proc`` and ``/sys`` refuse entries whatever the permission
    bits say; root passes permission bits, not a read-only mount); ``path`` itself, when it exists, is
    only asked (``access``), so a folder another writer holds is not touched."""
    path = Path(path)
    place = path
    while not os.path.lexists(place) and place != place.parent:
        place = place.parent
    _check_name_lengths(path, place, flag)
    if not place.is_dir():
        what = "a broken link" if place.is_symlink() and not place.exists() else "not a folder"
        where = f"{place} is {what}" if place != path else f"it is {what}"
        raise UnwritablePlace(f"{flag} {path}: cannot write there ({where}); choose another {flag}")
    if place == path:  # an existing folder (perhaps another writer's): asked, not probed, so nothing is touched
        if os.access(path, os.W_OK | os.X_OK):
            return
        readonly = hasattr(os, "statvfs") and bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        raise UnwritablePlace(f"{flag} {path}: cannot write there "
                              f"({'read-only file system' if readonly else 'permission denied'}); choose another {flag}")
    try:
        fd = os.open(place / f"{TEMP_MARK}probe-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        why = _WHY.get(exc.errno, exc.strerror or type(exc).__name__)
        where = why if place == path else f"{place}: {why}"
        raise UnwritablePlace(f"{flag} {path}: cannot write there ({where}); choose another {flag}") from None
    os.close(fd)
    for probe in place.glob(f"{TEMP_MARK}probe-{os.getpid()}-*"):
        with contextlib.suppress(OSError):
            probe.unlink()


# -- the lock ----------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists. A lock file may hold anything: a pid no process can have (0, a
    negative one, or one past 2**31) is no live process. psutil asks the system the portable way
    (``os.kill(pid, 0)`` would end the process on Windows)."""
    if isinstance(pid, bool) or not 0 < pid < 2**31:
        return False
    import psutil  # here, not at the top: the command line imports this module at start-up

    return psutil.pid_exists(pid)


def read_lock(directory: Path) -> dict | None:
    try:
        text = (Path(directory) / LOCK_FILE).read_text()
        info = json.loads(text)
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _holder(info: dict | None) -> str:
    if not info:
        return "another process"
    since = info.get("started")
    try:  # a crafted lock file's time (1e300, nan) is left out, not a traceback
        since = f", since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(since))}" if isinstance(since, (int, float)) else ""
    except (OverflowError, OSError, ValueError):
        since = ""
    command = f"`realfill {info['command']}` " if info.get("command") else ""
    return f"{command}(pid {info.get('pid')} on {info.get('host')}{since})"


class RunLock:
    """The one-writer lock of a run folder; a context manager. Creating the folder (and its parents) is
    part of taking the lock; folders it created are removed again on release if nothing was written in
    them, so refused or failed runs leave no trace."""

    def __init__(self, directory: Path, command: str, *, console=None, resume_hint: str | None = None):
        self.directory = Path(directory)
        self.command = command
        self.console = console
        self.resume_hint = resume_hint
        self.path = self.directory / LOCK_FILE
        self._lock: FileLock | None = None
        self._created: list[Path] = []
        self.took_over: dict | None = None

    # -- taking and giving back --------------------------------------------------------------------

    def acquire(self) -> RunLock:
        check_writable(self.directory)
        missing = []
        place = self.directory
        while not place.exists():
            missing.append(place)
            place = place.parent
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UnwritablePlace(f"--out {self.directory}: cannot create it: {_WHY.get(exc.errno, exc.strerror)}") from None
        self._created = missing  # deepest first
        if issubclass(FileLock, SoftFileLock):  # neither fcntl nor Windows: filelock has only lock-by-existence
            self._remove_created()
            raise UnwritablePlace(f"{self.path}: cannot lock the run folder: this platform has no file locks "
                                  "(Python's fcntl module is missing)")
        for _ in range(10):
            lock = FileLock(self.path, blocking=False, on_acquired=self._take_over, fallback_to_soft=False)
            try:
                lock.acquire()
            except Timeout:
                if not self.path.exists():  # its holder released it (and removed the file) just then: try again
                    continue
                raise RunFolderBusy(f"{self.directory}: in use by {_holder(read_lock(self.directory))}; "
                                    "one writer at a time: wait for it, or choose another --out") from None
            except (UserError, OutOfSpace):  # from _take_over: busy after all, or the record could not be written
                self._remove_created()
                raise
            except OSError as exc:
                self._remove_created()
                raise UnwritablePlace(f"{self.path}: cannot lock the run folder: "
                                      f"{_WHY.get(exc.errno, exc.strerror or type(exc).__name__)}") from None
            break
        else:  # pragma: no cover - ten lost races in a row
            raise RunFolderBusy(f"{self.directory}: its lock keeps changing hands; try again")
        self._lock = lock
        sweep_temporaries(self.directory)
        return self

    def _take_over(self, fd: int) -> None:
        """filelock's ``on_acquired``: with the system lock held, check what a previous holder left in the file,
        then write this writer's record into it (filelock leaves the file's content to its user)."""
        self._check_previous(fd)
        self._write_info(fd)

    def _check_previous(self, fd: int) -> None:
        """The lock file is ours by the system's lock; content left in it is a writer that ended without
        releasing (or one of another host, whose lock this host cannot see)."""
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        if not raw.strip():
            return
        try:
            info = json.loads(raw)
        except ValueError:
            info = None
        info = info if isinstance(info, dict) else None  # a list, a number: garbage, as unparsable bytes
        host = socket.gethostname()
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            if info.get("host") != host:
                raise RunFolderBusy(f"{self.directory}: locked by {_holder(info)}, another host; if that run is "
                                    f"gone, delete {self.path}")
            if info["pid"] != os.getpid() and _alive(info["pid"]):
                raise RunFolderBusy(f"{self.directory}: locked by {_holder(info)}, still running; wait for it, "
                                    f"or if it is not a realfill run, delete {self.path}")
        self.took_over = info if isinstance(info, dict) else {}
        if self.console is not None:
            self.console.print(f"[yellow]note:[/] {self.directory}: took over the lock left by "
                               f"{_holder(info)}, which is no longer running", soft_wrap=True)

    def _write_info(self, fd: int) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "started": time.time()}
        data = (json.dumps(info) + "\n").encode()
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, data)
        except OSError as exc:  # filelock releases the lock when this hook raises
            with contextlib.suppress(OSError):
                self.path.unlink()  # still held: as release() does, so the folders acquire made can go again
            if is_out_of_space(exc):
                raise OutOfSpace(self.path, free_bytes(self.directory), resume_hint=self.resume_hint) from None
            raise UnwritablePlace(f"{self.path}: cannot write the lock: {exc.strerror}") from None

    def release(self) -> None:
        if self._lock is None:
            return
        with contextlib.suppress(OSError):  # Windows refuses while it is open: filelock removes it on release
            self.path.unlink()  # while still holding it; a writer that locked the vanished file tries again
        self._lock.release()
        self._lock = None
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:  # deepest first; only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    @property
    def held(self) -> bool:
        return self._lock is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind, exc, tb) -> None:
        if isinstance(exc, OutOfSpace):
            exc.run_dir = exc.run_dir or self.directory
            exc.resume_hint = exc.resume_hint or self.resume_hint
        elif exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)) and space_failure(exc):
            # a write outside the helpers (a library's own)
            self.release()
            raise OutOfSpace(Path(getattr(exc, "filename", None) or self.directory), free_bytes(self.directory),
                             run_dir=self.directory, resume_hint=self.resume_hint) from exc
        self.release()


def sweep_temporaries(directory: Path) -> list[Path]:
    """Remove what killed writers left half-written in ``directory`` (their temporary files and folders,
    ``*.realfill-tmp-*``, and a checkpoint folder being built). Call only while holding its lock."""
    removed = []
    for swapped in Path(directory).rglob(f"*{TEMP_MARK}old-*"):  # killed between atomic_dir's two renames
        original = swapped.with_name(swapped.name.split(TEMP_MARK)[0])
        if swapped.is_dir() and not original.exists():
            os.replace(swapped, original)
    for root, dirs, files in os.walk(directory):
        for name in [*files, *dirs]:
            if TEMP_MARK in name or (name == CHECKPOINT_BUILDING and Path(root) == Path(directory)):
                path = Path(root) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
                removed.append(path)
        dirs[:] = [d for d in dirs if TEMP_MARK not in d]
    return removed


__all__ = ["LOCK_FILE", "RunFolderBusy", "RunLock", "UnwritablePlace", "check_writable", "read_lock",
           "sweep_temporaries"]
