"""VIF, visual information fidelity in the pixel domain (Sheikh & Bovik 2006, "Image information and
visual quality"), as torchmetrics computes it: four scales of Gaussian windows, visual noise variance
``sigma_n_sq = 2`` in 8-bit grey levels (so the images go in as 0-255, not 0-1), the mean over the RGB
channels. A weight-free full-reference index; 1 = the ground truth, higher is better.

- ``vif``: the whole image.
- ``vif_masked``: the bounding box of the mask. VIF is a ratio of two sums over the image (the information
  the result keeps over the information the reference holds), so it has no per-pixel map to average over
  the hole; the box is the smallest rectangle holding all of it (the known pixels inside it are the
  ground truth's, as with ``ms_ssim_masked``). NaN when the box is under 41 pixels a side (VIF's window).

What it does not do: on a warp that is misregistered (parallax), VIF does not punish a blur of the fill
(blurring removes wrong detail as much as right detail); ``sharpness`` does (docs/evaluation.md).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torchmetrics.functional.image import visual_information_fidelity

from realfill.components import ComponentConfig, Metric
from realfill.hookspecs import hookimpl
from realfill_plugins.metrics.pixel import bounding_box

MIN_SIDE = 41  # torchmetrics' coarsest scale needs a 41x41 image


def vif(result: np.ndarray, gt: np.ndarray) -> float:
    """VIF of two HxWx3 uint8 images (float32, grey levels 0-255)."""
    if min(gt.shape[:2]) < MIN_SIDE:
        return math.nan
    a, b = (torch.from_numpy(np.asarray(x, dtype=np.float32)).permute(2, 0, 1)[None] for x in (result, gt))
    return float(visual_information_fidelity(a, b))


class VIF(Metric):
    name = "vif"
    summary = "VIF (visual information fidelity, torchmetrics) of the mask's bounding box and of the image"

    class Config(ComponentConfig):
        name: Literal["vif"] = "vif"

    def compute(self, result, gt, mask):
        rows, cols = bounding_box(mask)
        return {"vif_masked": vif(result[rows, cols], gt[rows, cols]), "vif": vif(result, gt)}


@hookimpl
def realfill_register_metrics(registry):
    registry.add(VIF)
