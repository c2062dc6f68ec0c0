"""A fine-tuning run's checkpoints: ``RUN/checkpoint/`` (``state.pt`` and the adapter's own files),
replaced whole (:func:`realfill.atomic.atomic_dir`), so a kill never leaves half a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from realfill.atomic import OutOfSpace, atomic_dir, atomic_write_text, free_bytes, torch_save
from realfill.layout import ADAPTER_DIR, CHECKPOINT_BUILDING, CHECKPOINT_DIR, STATE_FILE


def save_checkpoint(trainer: Any, run_dir: Path) -> Path:
    """``run_dir/checkpoint/``: ``state.pt`` (trained parameters, optimizer, schedule, step, RNG states) and
    ``adapter/`` (the adapter's own format) of ``trainer`` (a :class:`realfill.training.Trainer`), replaced
    atomically. A failed write (a full disk: :class:`realfill.atomic.OutOfSpace`) removes the half-built
    one and leaves the previous checkpoint as it was."""
    final = Path(run_dir) / CHECKPOINT_DIR
    try:
        with atomic_dir(final, building=Path(run_dir) / CHECKPOINT_BUILDING) as building:
            torch_save(trainer.state_dict(), building / STATE_FILE)
            trainer.adapter.save(trainer.model, building / ADAPTER_DIR)
    except OutOfSpace:
        raise OutOfSpace(final, free_bytes(run_dir)) from None
    return final


def load_checkpoint(run_dir: Path) -> dict | None:
    """The state of ``run_dir``'s last checkpoint, or None."""
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):  # .old: a folder left by an earlier version
        path = Path(run_dir) / name / STATE_FILE
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=False)
    return None


def truncate_log(path: Path, step: int) -> None:
    """Cut ``train_log.jsonl`` back to ``step`` (a resumed run logs the later steps again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
