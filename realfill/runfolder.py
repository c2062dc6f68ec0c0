"""Run folders that survive concurrent writers, full disks and unwritable places.

- :class:`RunLock`: one writer per run folder. The lock file ``DIR/.realfill.lock`` holds the writer's
  process id, host, command and start time, and is held with ``flock`` while the writer runs, so the
  kernel frees it when the process dies, however it dies. A second writer is refused
  (:class:`RunFolderBusy`, a :class:`UserError`: one line naming the holder, exit 2) before it touches
  anything; a lock file left by a dead process on this host is taken over with a one-line note.
- :func:`check_writable`: the place a run will write is probed (a temporary file created and removed in
  the deepest folder that exists) before any weights load: read-only file systems, permissions, ``/proc``,
  ``/sys`` and paths through a file are one line naming the path and why (:class:`UnwritablePlace`).
- Atomic writes: every file of a run folder is written to a temporary file beside it and renamed over the
  old one (``os.replace``) only when it is whole (:func:`atomic_write_bytes`, ``_text``, ``_json``,
  :func:`save_image`, :func:`torch_save`, :func:`save_safetensors`, :func:`atomic_write`); folders that
  are written as a whole (``adapter/``, ``samples/``) are built beside their final name and swapped in
  (:func:`atomic_dir`). A kill leaves the old file or the new one, never half of one.
- Out of space: ENOSPC (or a full quota) anywhere in those writes removes the temporary file or folder and
  raises :class:`OutOfSpace` (what was being written, the free space); the command line prints it as one
  line with the last good checkpoint and exits with :data:`EXIT_OUT_OF_SPACE`.

Temporary names contain ``.realfill-tmp-``; a writer that takes the lock removes any such leftover of a
killed writer (:func:`sweep_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from realfill.errors import UserError

#: the exit code of a run stopped by a full disk (2 is bad input, 130 an interrupt)
EXIT_OUT_OF_SPACE = 3
LOCK_FILE = ".realfill.lock"
TEMP_MARK = ".realfill-tmp-"
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class OutOfSpace(Exception):
    """A write of the run folder failed for lack of space. ``path``: what was being written; ``free``:
    the bytes free there afterwards; ``run_dir``/``resume_hint``: filled in by the command that held the
    run folder, for the message."""

    def __init__(self, path: Path, free: int | None, *, run_dir: Path | None = None, resume_hint: str | None = None):
        self.path, self.free, self.run_dir, self.resume_hint = Path(path), free, run_dir, resume_hint
        super().__init__(str(path))

    def message(self) -> str:
        free = "unknown space" if self.free is None else f"{format_bytes(self.free)}"
        parts = [f"{self.path}: out of space while writing it ({free} free there)"]
        if self.run_dir is not None:
            parts.append(f"last good checkpoint: {checkpoint_status(self.run_dir)}")
        parts.append(self.resume_hint or "free space, then --resume")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.message()


class RunFolderBusy(UserError):
    """Another live process holds the run folder's lock."""


class UnwritablePlace(UserError):
    """The run cannot write where it was asked to."""


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    place = Path(path)
    while not place.exists() and place != place.parent:
        place = place.parent
    try:
        return shutil.disk_usage(place).free
    except OSError:
        return None


def is_out_of_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS


def checkpoint_status(run_dir: Path) -> str:
    """What a ``--resume`` of ``run_dir`` would start from, in words."""
    from realfill.training import ADAPTER_DIR, CHECKPOINT_DIR, training_finished

    run_dir = Path(run_dir)
    try:
        if training_finished(run_dir):
            return f"training finished ({run_dir / ADAPTER_DIR} is whole)"
    except (OSError, ValueError):
        pass
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        state = run_dir / name / "state.pt"
        if state.is_file():
            try:
                import torch

                step = torch.load(state, map_location="cpu", weights_only=False, mmap=True)["step"]
                return f"step {int(step)} ({state.parent})"
            except Exception:  # noqa: BLE001 - a message must not fail
                return f"{state.parent}"
    return "none (training starts again)"


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
        except (OSError, ValueError):
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
        readonly = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
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
    negative one, which would ask a whole process group, or one past 2**31) is no live process."""
    if isinstance(pid, bool) or not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self._fd: int | None = None
        self._created: list[Path] = []
        self.took_over: dict | None = None

    # -- taking and giving back --------------------------------------------------------------------

    def acquire(self) -> RunLock:
        import fcntl

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
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                self._remove_created()
                raise UnwritablePlace(f"{self.path}: cannot create the run folder's lock: "
                                      f"{_WHY.get(exc.errno, exc.strerror)}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderBusy(f"{self.directory}: in use by {_holder(read_lock(self.directory))}; "
                                    "one writer at a time: wait for it, or choose another --out") from None
            try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - ten lost races in a row
            raise RunFolderBusy(f"{self.directory}: its lock keeps changing hands; try again")
        try:
            self._check_previous(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._write_info()
        sweep_temporaries(self.directory)
        return self

    def _check_previous(self, fd: int) -> None:
        """The lock file is ours by flock; content left in it is a writer that ended without releasing."""
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

    def _write_info(self) -> None:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command, "started": time.time()}
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        try:
            os.write(self._fd, data)
        except OSError as exc:
            self.release()
            if is_out_of_space(exc):
                raise OutOfSpace(self.path, free_bytes(self.directory), resume_hint=self.resume_hint) from None
            raise UnwritablePlace(f"{self.path}: cannot write the lock: {exc.strerror}") from None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it, so no one takes a file about to vanish
        os.close(self._fd)
        self._fd = None
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
        return self._fd is not None

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
    from realfill.training import CHECKPOINT_DIR

    removed = []
    for swapped in Path(directory).rglob(f"*{TEMP_MARK}old-*"):  # killed between atomic_dir's two renames
        original = swapped.with_name(swapped.name.split(TEMP_MARK)[0])
        if swapped.is_dir() and not original.exists():
            os.replace(swapped, original)
    for root, dirs, files in os.walk(directory):
        for name in [*files, *dirs]:
            if TEMP_MARK in name or (name == f"{CHECKPOINT_DIR}.tmp" and Path(root) == Path(directory)):
                path = Path(root) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()
                removed.append(path)
        dirs[:] = [d for d in dirs if TEMP_MARK not in d]
    return removed


# -- atomic writes -----------------------------------------------------------------------------------


def temporary_name(path: Path) -> Path:
    """A temporary sibling of ``path`` that keeps its suffix (image writers read the format from it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _space_error(path: Path, exc: BaseException) -> OutOfSpace:
    return OutOfSpace(path, free_bytes(Path(path).parent))


def _sync(fd: int) -> None:
    os.fsync(fd)


class _RecordingFile:
    """A binary file that remembers the OSError its write raised: torch's zip writer turns it into a
    ``RuntimeError: ... unexpected pos``, and the cause would be lost."""

    def __init__(self, f: IO[bytes]):
        self._f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name):
        return getattr(self._f, name)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary binary file beside it, which is
    flushed, synced and renamed over ``path``. Any failure removes the temporary file; ENOSPC raises
    :class:`OutOfSpace` naming ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    recorder = None
    try:
        with open(tmp, "xb") as f:
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            _sync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if space_failure(exc) or (recorder is not None and is_out_of_space(recorder.error)):
            raise _space_error(path, exc) from None
        raise
    return path


_NO_SPACE_WORDS = ("No space left on device", "StorageFull", "os error 28", "Disk quota exceeded")


def space_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a full disk: libraries wrap the file's OSError (torch's zip
    writer, safetensors' Rust writer say it only in their message); look through the chain."""
    seen = 0
    while exc is not None and seen < 8:
        if is_out_of_space(exc) or any(word in str(exc) for word in _NO_SPACE_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, payload: Any, **kwargs) -> Path:
    kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(payload, **kwargs) + "\n")


def save_image(path: Path, image) -> Path:
    """A PIL image or an HxW(x3) uint8 array, in the format of ``path``'s suffix, atomically."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    buffer = io.BytesIO()  # encode first: a full disk then fails in one write, never inside the encoder
    picture.save(buffer, format=fmt)
    return atomic_write_bytes(path, buffer.getvalue())


def torch_save(obj: Any, path: Path) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save

    return atomic_write_bytes(path, save(tensors, metadata=metadata))


class AtomicLog:
    """A log file that grows one whole line at a time: each ``write`` replaces the file atomically with
    everything so far (a kill or a full disk never leaves half a line). Opens on the file's current
    content; used like a text file in ``with``."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._text = self.path.read_text() if self.path.is_file() else ""

    def write(self, text: str) -> int:
        atomic_write_text(self.path, self._text + text)
        self._text += text
        return len(text)

    def flush(self) -> None:
        pass

    def __enter__(self) -> AtomicLog:
        return self

    def __exit__(self, *exc) -> None:
        pass


def sync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` (what libraries wrote there themselves), so a full disk shows
    now, before the folder is renamed into place, and not later."""
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        fd = os.open(file, os.O_RDONLY)
        try:
            _sync(fd)
        finally:
            os.close(fd)


def canonical_safetensors(path: Path) -> Path:
    """Rewrite a ``.safetensors`` file's JSON header with its keys sorted, in place (atomically), so that
    the same tensors and metadata give the same bytes: safetensors keeps the metadata in a Rust hash map,
    whose order changes from process to process. The tensor data and its offsets are untouched; the
    header keeps its length (padded with spaces, as the format allows)."""
    path = Path(path)
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    if len(canonical) > size:  # pragma: no cover - the same content never grows
        return path
    canonical += b" " * (size - len(canonical))
    if canonical != data[8 : 8 + size]:
        atomic_write_bytes(path, data[:8] + canonical + data[8 + size :])
    return path


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Build a folder beside ``path`` and swap it in when the block succeeds (the old one, if any, is
    removed after); on failure the temporary folder goes and ``path`` is as it was. Files written inside
    by any library are synced before the swap; ENOSPC raises :class:`OutOfSpace` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    old = path.with_name(f"{path.name}{TEMP_MARK}old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        sync_tree(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        if space_failure(exc):
            raise OutOfSpace(path, free_bytes(path.parent)) from None
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["EXIT_OUT_OF_SPACE", "AtomicLog", "LOCK_FILE", "OutOfSpace", "RunFolderBusy", "RunLock", "UnwritablePlace",
           "atomic_dir", "atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "check_writable", "checkpoint_status", "save_image", "save_safetensors", "sweep_temporaries",
           "torch_save"]
