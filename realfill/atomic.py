"""Atomic writes: every file of a run folder is written to a temporary file beside it and renamed over
the old one (``os.replace``) only when it is whole (:func:`atomic_write_bytes`, ``_text``, ``_json``,
:func:`save_image`, :func:`torch_save`, :func:`save_safetensors`, :func:`atomic_write`); folders that are
written as a whole (``adapter/``, ``samples/``, ``checkpoint/``) are built beside their final name and
swapped in (:func:`atomic_dir`). A kill leaves the old file or the new one, never half of one.

Out of space: ENOSPC (or a full quota) anywhere in those writes removes the temporary file or folder and
raises :class:`OutOfSpace` (what was being written, the free space); the command line prints it as one line
with the last good checkpoint and exits with :data:`EXIT_OUT_OF_SPACE`. Temporary names contain
``.realfill-tmp-`` (:data:`TEMP_MARK`); :func:`realfill.runfolder.sweep_temporaries` removes a killed
writer's.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from realfill.layout import checkpoint_status

#: the exit code of a run stopped by a full disk (2 is bad input, 130 an interrupt)
EXIT_OUT_OF_SPACE = 3
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
    from PIL import Image  # start-up time: the CLI imports this module to check --out first

    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    buffer = io.BytesIO()  # encode first: a full disk then fails in one write, never inside the encoder
    picture.save(buffer, format=fmt)
    return atomic_write_bytes(path, buffer.getvalue())


def torch_save(obj: Any, path: Path) -> Path:
    import torch  # start-up time: the CLI imports this module to check --out first

    return atomic_write(path, lambda f: torch.save(obj, f))


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save  # start-up time: as torch_save's

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
def atomic_dir(path: Path, building: Path | None = None) -> Iterator[Path]:
    """Build a folder beside ``path`` and swap it in when the block succeeds (the old one, if any, is
    removed after); on failure the temporary folder goes and ``path`` is as it was. Files written inside
    by any library are synced before the swap; ENOSPC raises :class:`OutOfSpace` naming ``path``.
    ``building``: the temporary folder's path (default a unique hidden sibling); one left by a killed
    writer is removed first."""
    path = Path(path)
    tmp = Path(building) if building is not None else path.with_name(
        f"{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    if building is not None and tmp.exists():
        shutil.rmtree(tmp)
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


__all__ = ["EXIT_OUT_OF_SPACE", "TEMP_MARK", "AtomicLog", "OutOfSpace", "atomic_dir", "atomic_write",
           "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "canonical_safetensors", "free_bytes",
           "is_out_of_space", "save_image", "save_safetensors", "space_failure", "sync_tree", "torch_save"]
