"""Sharpness of the fill against the ground truth: their high-frequency energy in the same region.

The high-pass is the luminance (Rec. 601, in [0, 1]) minus its Gaussian blur (sigma 1 px, reflected
borders), taken over the whole image so that the hole's edge is filtered like any other pixel; its energy
is the mean square over the region. With ``r`` = the result's energy over the ground truth's, the value is
``min(r, 1/r)``: 1 when the fill carries as much fine detail as the ground truth, towards 0 when it is
blurred (r < 1) or noisier (r > 1). Higher is better.

- ``sharpness_masked``: over the masked pixels only.
- ``sharpness``: over the whole image (the known pixels are the ground truth's, so it is near 1).

It measures the amount of detail, not its place: pair it with a fidelity metric (PSNR, SSIM, VIF). Its
use is the case those miss: a fill blurred inside the hole scores higher PSNR than the sharp fill it was
made from, and a much lower sharpness (tests/test_metrics.py, docs/evaluation.md).
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

from realfill.components import ComponentConfig, Metric
from realfill.hookspecs import hookimpl

SIGMA = 1.0
LUMA = np.array([0.299, 0.587, 0.114])


def high_pass(image: np.ndarray) -> np.ndarray:
    """HxW float64: the luminance minus its Gaussian blur (sigma ``SIGMA``)."""
    luminance = (np.asarray(image, dtype=np.float64) / 255.0) @ LUMA
    return luminance - cv2.GaussianBlur(luminance, (0, 0), SIGMA, borderType=cv2.BORDER_REFLECT)


def energy_ratio(result: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The result's high-frequency energy over the ground truth's, in ``mask`` (or the whole image)."""
    hr, hg = high_pass(result) ** 2, high_pass(gt) ** 2
    if mask is not None:
        hr, hg = hr[mask], hg[mask]
    er, eg = float(hr.mean()), float(hg.mean())
    if eg == 0.0:
        return 1.0 if er == 0.0 else math.inf
    return er / eg


def sharpness(result: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    r = energy_ratio(result, gt, mask)
    if r == 0.0 or math.isinf(r):
        return 0.0
    return min(r, 1.0 / r)


class Sharpness(Metric):
    name = "sharpness"
    summary = "high-frequency energy of the fill against the ground truth's, min(r, 1/r), in the mask and overall"

    class Config(ComponentConfig):
        name: Literal["sharpness"] = "sharpness"

    def compute(self, result, gt, mask):
        return {"sharpness_masked": sharpness(result, gt, mask), "sharpness": sharpness(result, gt)}


@hookimpl
def realfill_register_metrics(registry):
    registry.add(Sharpness)
