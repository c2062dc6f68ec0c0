"""Where training keeps its state in a run folder, and what a resume would start from.

The lowest layer of the run folder: names only (and reading them), so that the lock's messages
(:mod:`realfill.runfolder`) and the trainer's checkpoints (:mod:`realfill.checkpoints`) agree without either
importing the other.
"""

from __future__ import annotations

import json
from pathlib import Path

CHECKPOINT_DIR = "checkpoint"
TRAIN_LOG = "train_log.jsonl"
ADAPTER_DIR = "adapter"
TRAIN_STATE = "train_state.json"
#: the file of a checkpoint folder that holds the trainer's state (step, optimizer, RNGs)
STATE_FILE = "state.pt"
#: where a checkpoint is built before it replaces the last one (named, so that fault tests can aim at it)
CHECKPOINT_BUILDING = f"{CHECKPOINT_DIR}.tmp"
#: ``train.keep_adapters``: the adapter at a step, ``adapter/step-00500/`` (the final one is ``adapter/``)
SNAPSHOT_PREFIX = "step-"


def adapter_snapshot(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / ADAPTER_DIR / f"{SNAPSHOT_PREFIX}{step:05d}"


def adapter_snapshots(run_dir: Path) -> dict[int, Path]:
    """The kept adapters of ``run_dir`` by step, oldest first."""
    found = {}
    for path in (Path(run_dir) / ADAPTER_DIR).glob(f"{SNAPSHOT_PREFIX}*"):
        number = path.name.removeprefix(SNAPSHOT_PREFIX)
        if path.is_dir() and number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))


def training_finished(run_dir: Path) -> bool:
    path = Path(run_dir) / TRAIN_STATE
    return path.is_file() and json.loads(path.read_text()).get("finished", False)


def trained_steps(run_dir: Path) -> int | None:
    """The steps a finished training ran (its final ``adapter/``), or None."""
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    return int(state["steps"]) if state.get("finished") and "steps" in state else None


def checkpoint_status(run_dir: Path) -> str:
    """What a ``--resume`` of ``run_dir`` would start from, in words."""
    run_dir = Path(run_dir)
    try:
        if training_finished(run_dir):
            return f"training finished ({run_dir / ADAPTER_DIR} is whole)"
    except (OSError, ValueError):
        pass
    for name in (CHECKPOINT_DIR, f"{CHECKPOINT_DIR}.old"):
        state = run_dir / name / STATE_FILE
        if state.is_file():
            try:
                import torch  # start-up time: the CLI imports the run folder's modules before any torch

                step = torch.load(state, map_location="cpu", weights_only=False, mmap=True)["step"]
                return f"step {int(step)} ({state.parent})"
            except Exception:  # noqa: BLE001 - a message must not fail
                return f"{state.parent}"
    return "none (training starts again)"
