"""``telea``: classical inpainting, OpenCV's fast-marching method (Telea 2004), radius 5. Uses no reference."""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from realfill.components import Baseline, BaselineResult, ComponentConfig
from realfill.hookspecs import hookimpl


def telea(scene, radius: int = 5) -> BaselineResult:
    """OpenCV Telea inpainting of the masked region."""
    bgr = cv2.cvtColor(scene.target, cv2.COLOR_RGB2BGR)
    filled = cv2.inpaint(bgr, scene.mask.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return BaselineResult(cv2.cvtColor(filled, cv2.COLOR_BGR2RGB), {"radius": radius})


class TeleaBaseline(Baseline):
    name = "telea"
    summary = "OpenCV fast-marching inpainting (Telea 2004); uses no reference"
    uses_references = False

    class Config(ComponentConfig):
        name: Literal["telea"] = "telea"
        # at most 256 px (OpenCV's own examples use 3; each hole pixel weighs every known pixel within it,
        # and 1e20 overflowed OpenCV's int)
        radius: int = Field(5, ge=1, le=256)

    def complete(self, scene) -> BaselineResult:
        return telea(scene, self.config.radius)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(TeleaBaseline)
