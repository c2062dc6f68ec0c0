"""A test plugin file: a real (small) image baseline, ``navier-stokes``, OpenCV's Navier-Stokes
inpainting (Bertalmio et al. 2001), registered the way a third party ships PatchMatch or LaMa."""

from typing import Literal

import cv2
import numpy as np

from realfill import hookimpl
from realfill.components import Baseline, BaselineResult, ComponentConfig


class NavierStokes(Baseline):
    name = "navier-stokes"
    summary = "OpenCV Navier-Stokes inpainting (Bertalmio et al. 2001); uses no reference"
    uses_references = False

    class Config(ComponentConfig):
        name: Literal["navier-stokes"] = "navier-stokes"
        radius: int = 5

    def complete(self, scene):
        bgr = cv2.cvtColor(scene.target, cv2.COLOR_RGB2BGR)
        filled = cv2.inpaint(bgr, scene.mask.astype(np.uint8) * 255, self.config.radius, cv2.INPAINT_NS)
        return BaselineResult(cv2.cvtColor(filled, cv2.COLOR_BGR2RGB), {"radius": self.config.radius})


@hookimpl
def realfill_register_baselines(registry):
    registry.add(NavierStokes)
