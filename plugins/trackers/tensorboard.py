"""``tensorboard``: TensorBoard event files under ``FOLDER/tensorboard/RUN_NAME/`` (PyTorch's
``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package: ``realfill[tracking]``).

``tensorboard --logdir RUN/tensorboard`` (a fill) or ``--logdir ABLATION/tensorboard`` (an ablation: one
run per name, so TensorBoard overlays them). Scalars, the validation strips as images, the final metrics,
the comparison table as a Markdown text panel and the run config as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from realfill.components import ComponentConfig, Tracker
from realfill.hookspecs import hookimpl

#: where a folder's event files go
TENSORBOARD_DIR = "tensorboard"
#: seconds between flushes of pending events (a live TensorBoard sees a running training); all at finish
FLUSH_SECS = 30


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    summary = "TensorBoard event files in FOLDER/tensorboard/RUN (scalars, validation images, metrics, tables)"
    needs = ("extra: tracking",)
    requires = ("tensorboard",)

    class Config(ComponentConfig):
        name: Literal["tensorboard"] = "tensorboard"

    def start(self, directory, run_name, config):
        from torch.utils.tensorboard import SummaryWriter  # start-up time; the extra

        self.writer = SummaryWriter(log_dir=str(Path(directory) / TENSORBOARD_DIR / run_name), flush_secs=FLUSH_SECS)
        if config:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log_scalars(self, values, step):
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_image(self, tag, image, step):
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def log_table(self, tag, rows, step):
        keys = list(rows[0])
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
        self.writer.add_text(tag, "\n".join(lines), step)

    def finish(self):
        self.writer.close()


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


@hookimpl
def realfill_register_trackers(registry):
    registry.add(TensorBoardTracker)
