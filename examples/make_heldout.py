"""Write the held-out scenes: real photos from scikit-image that the ``cpu`` preset was *not* tuned on, to check
that its result and its seed selection hold beyond examples/motorcycle.

- ``motorcycle-mirror``: the stereo pair the other way round: the *left* view is the target with its *left*
  35% to outpaint, three crops of the right view are the references (other content in the hole).
- ``motorcycle-box``: the right view with a central box to inpaint (not outpaint), the left view's crops
  as references.
- ``astronaut-view`` and ``coffee-view``: one real photo; the references are three crops of it seen through
  a mild homography (a simulated change of viewpoint) and a change of exposure, the target is an
  unwarped crop with its bottom (astronaut) or right (coffee) part to fill. The views are synthetic, the
  pixels are real.

Run: python examples/make_heldout.py OUT_DIR   (one folder per scene, RealBench layout, gt.png included)
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data


def _resize(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    return np.asarray(Image.fromarray(image).resize((width, round(h * width / w)), Image.LANCZOS))


def _write(folder: Path, references: list[np.ndarray], gt: np.ndarray, mask: np.ndarray) -> None:
    (folder / "ref").mkdir(parents=True, exist_ok=True)
    (folder / "target").mkdir(parents=True, exist_ok=True)
    for index, reference in enumerate(references):
        Image.fromarray(reference).save(folder / "ref" / f"ref_{index}.png")
    target = gt.copy()
    target[mask] = 0
    Image.fromarray(target).save(folder / "target" / "target.png")
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(folder / "target" / "mask.png")
    Image.fromarray(gt).save(folder / "target" / "gt.png")


def _crops(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[:2]
    cw, ch = int(w * 0.7), int(h * 0.8)
    return [image[:ch, :cw], image[:ch, w - cw :], image[h - ch :, (w - cw) // 2 : (w - cw) // 2 + cw]]


def _view(image: np.ndarray, seed: int) -> np.ndarray:
    """``image`` through a mild random homography (corners moved up to 6% of the size) and an exposure
    change (gain 0.85-1.15 per channel)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = corners + rng.uniform(-0.06, 0.06, corners.shape).astype(np.float32) * np.float32([w, h])
    warped = cv2.warpPerspective(image, cv2.getPerspectiveTransform(corners, moved), (w, h),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.85, 1.15, 3)
    return np.clip(warped.astype(np.float64) * gain, 0, 255).astype(np.uint8)


def main(out: Path) -> None:
    left, right, _ = data.stereo_motorcycle()
    left, right = _resize(left, 370), _resize(right, 370)
    h, w = right.shape[:2]

    mask = np.zeros((h, w), bool)
    mask[:, : int(round(w * 0.35))] = True
    _write(out / "motorcycle-mirror", _crops(right), left, mask)

    mask = np.zeros((h, w), bool)
    mask[h // 4 : 3 * h // 4, 3 * w // 8 : 5 * w // 8] = True
    _write(out / "motorcycle-box", _crops(left), right, mask)

    for name, photo, side in (("astronaut-view", data.astronaut(), "bottom"), ("coffee-view", data.coffee(), "right")):
        photo = _resize(photo, 370)
        ph, pw = photo.shape[:2]
        gt = photo[: min(ph, 250)]
        gh, gw = gt.shape[:2]
        mask = np.zeros((gh, gw), bool)
        if side == "bottom":
            mask[int(round(gh * 0.65)) :] = True
        else:
            mask[:, int(round(gw * 0.65)) :] = True
        references = [_view(crop, seed) for seed, crop in enumerate(_crops(photo))]
        _write(out / name, references, gt, mask)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/make_heldout.py OUT_DIR")
    main(Path(sys.argv[1]))
