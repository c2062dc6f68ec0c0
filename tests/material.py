"""Test material that needs no download, for realfill's tests and benchmarks: real test scenes from photos
that ship with scikit-image, and original-format single checkpoint files written from a (tiny) diffusers
pipeline. It lives beside the tests, not in the installed package: users run none of it."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

from realfill import sampling
from realfill.scene import Scene


def resize_to_width(image: np.ndarray, width: int) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def stereo_motorcycle_scene(width: int = 256) -> Scene:
    """skimage's real stereo pair: target = the right view with its right 35% to outpaint (blanked to
    127), references = three crops of the left view (as in examples/motorcycle), gt = the right view."""
    left, right, _ = data.stereo_motorcycle()
    left, right = resize_to_width(left, width), resize_to_width(right, width)
    h, w = right.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[:, int(w * 0.65) :] = True
    references = [left[:, : int(w * 0.8)], left[:, int(w * 0.2) :], left[h // 10 :, w // 8 : w - w // 8]]
    target = right.copy()
    target[mask] = 127
    return Scene(Path("stereo_motorcycle"), "stereo_motorcycle", references, [], target, mask, right)


# -- a composited result -----------------------------------------------------------------------------


def known_pixels_kept(result: np.ndarray, target: np.ndarray, mask: np.ndarray, dilate: int, feather: int) -> bool:
    """True when ``result`` equals ``target`` exactly outside the dilated and feathered band."""
    outside = sampling.blend_weights(mask, dilate, feather) == 0
    return bool(np.array_equal(result[outside], target[outside]))


# -------------------------------------------------------------------------------------------------
# Devices for tests that run on the CPU and again on a GPU (``pytest -m cuda``; scripts/gpu-check.sh).
# -------------------------------------------------------------------------------------------------

#: where the ``cuda``-marked test cases run: ``cuda``, or ``cpu`` for ``scripts/gpu-check.sh --cpu-dry-run``,
#: which runs the GPU check's own test subset on the CPU so that it cannot rot before a GPU appears
CUDA_TEST_DEVICE = "REALFILL_CUDA_TEST_DEVICE"


def test_devices() -> list:
    """``pytest.mark.parametrize`` values: ``cpu``, and the GPU case, marked ``cuda`` and skipped with the
    reason where torch sees no GPU (unless ``REALFILL_CUDA_TEST_DEVICE=cpu`` sends it to the CPU)."""
    import pytest  # a test-only dependency, asked for only by the test helper that skips
    device = os.environ.get(CUDA_TEST_DEVICE, "cuda")
    skip = pytest.mark.skipif(device.startswith("cuda") and not torch.cuda.is_available(),
                              reason="needs a CUDA GPU (torch sees none); scripts/gpu-check.sh runs it on one")
    return ["cpu", pytest.param(device, marks=[pytest.mark.cuda, skip], id=f"cuda-check-{device}")]


test_devices.__test__ = False  # a helper, not a test, for pytest's collection
