"""Real test scenes from photos that ship with scikit-image, for realfill's tests and benchmarks and for
plugin authors testing their own components (no download needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from realfill.scene import Scene


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def stereo_motorcycle_scene(width: int = 256) -> Scene:
    """skimage's real stereo pair: target = the right view with its right 35% to outpaint (blanked to
    127), references = three crops of the left view (as in examples/motorcycle), gt = the right view."""
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    left, right = resize_to_width(left, width), resize_to_width(right, width)
    h, w = right.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[:, int(w * 0.65) :] = True
    references = [left[:, : int(w * 0.8)], left[:, int(w * 0.2) :], left[h // 10 :, w // 8 : w - w // 8]]
    target = right.copy()
    target[mask] = 127
    return Scene(Path("stereo_motorcycle"), "stereo_motorcycle", references, [], target, mask, right)
