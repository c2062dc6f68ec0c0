"""Rebuild examples/motorcycle from scikit-image's real stereo pair (Middlebury 'motorcycle').

The left view gives three overlapping reference crops; the right view is the target, whose right
35% is the region to outpaint; the untouched right view is the ground truth.
Run: python examples/make_motorcycle.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

SCALE = 0.5  # 741x500 -> 370x250: ample for the CPU preset, small in the repository
HERE = Path(__file__).resolve().parent / "motorcycle"


def main() -> None:
    left, right, _disparity = data.stereo_motorcycle()
    size = (round(left.shape[1] * SCALE), round(left.shape[0] * SCALE))
    left = np.asarray(Image.fromarray(left).resize(size, Image.LANCZOS))
    right = np.asarray(Image.fromarray(right).resize(size, Image.LANCZOS))
    w, h = size
    (HERE / "ref").mkdir(parents=True, exist_ok=True)
    (HERE / "target").mkdir(parents=True, exist_ok=True)
    cw, ch = int(w * 0.7), int(h * 0.8)
    crops = {"left_a.png": (0, 0), "left_b.png": (w - cw, 0), "left_c.png": ((w - cw) // 2, h - ch)}
    for name, (x, y) in crops.items():
        Image.fromarray(left[y : y + ch, x : x + cw]).save(HERE / "ref" / name)
    mask = np.zeros((h, w), np.uint8)
    mask[:, int(round(w * 0.65)) :] = 255
    target = right.copy()
    target[mask > 0] = 0
    Image.fromarray(target).save(HERE / "target" / "target.png")
    Image.fromarray(mask, mode="L").save(HERE / "target" / "mask.png")
    Image.fromarray(right).save(HERE / "target" / "gt.png")


if __name__ == "__main__":
    main()
