"""``geometric``: warping, TransFill's idea with one plane per reference. SIFT correspondences between each
reference and the target's known pixels (Lowe ratio 0.75), a RANSAC homography per reference (4 px, 5,000
iterations), and the reference with the most inliers (at least 8) is warped into the hole, its colours
matched (per-channel mean and std) to the target where the two overlap on known pixels; the next
references fill what it left uncovered, and Telea the rest. Under parallax one plane per reference is
its main error: ``multi-homography`` fits several.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from realfill.components import Baseline, BaselineResult, ComponentConfig
from realfill.hookspecs import hookimpl

if TYPE_CHECKING:
    from realfill.scene import Scene

MIN_INLIERS = 8


def sift_features(image: np.ndarray, mask: np.ndarray | None = None):
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    detector_mask = None if mask is None else mask.astype(np.uint8) * 255
    return cv2.SIFT_create(nfeatures=4000).detectAndCompute(gray, detector_mask)


def homography_to_target(reference: np.ndarray, scene: Scene, ratio: float = 0.75) -> tuple[np.ndarray | None, int, int]:
    """(H mapping reference pixels to target pixels, inliers, ratio-test matches) from SIFT + RANSAC.
    Target keypoints come from the known pixels only (eroded, so none sits on the hole's edge)."""
    known = cv2.erode((~scene.mask).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    kp_t, des_t = sift_features(scene.target, known)
    kp_r, des_r = sift_features(reference)
    if des_t is None or des_r is None or len(kp_t) < 2 or len(kp_r) < 2:
        return None, 0, 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_r, des_t, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if len(good) < 4:
        return None, 0, len(good)
    src = np.float32([kp_r[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    dst = np.float32([kp_t[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    homography, inlier_mask = cv2.findHomography(src, dst, cv2.RANSAC, 4.0, maxIters=5000, confidence=0.999)
    if homography is None:
        return None, 0, len(good)
    return homography, int(inlier_mask.sum()), len(good)


def match_colours(warped: np.ndarray, target: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    if overlap.sum() < 100:
        return warped
    out = warped.astype(np.float64)
    for c in range(3):
        src, dst = out[..., c][overlap], target[..., c][overlap].astype(np.float64)
        out[..., c] = (out[..., c] - src.mean()) * (dst.std() / max(src.std(), 1e-6)) + dst.mean()
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def geometric(scene: Scene) -> BaselineResult:
    """Warp the best-matching reference into the hole with a RANSAC homography (TransFill-style).

    References are tried from the most inliers down; each fills the hole pixels the better ones left
    uncovered (with one reference this is exactly "warp the best match"). Telea fills the rest."""
    h, w = scene.mask.shape
    candidates = []
    for index, reference in enumerate(scene.references):
        homography, inliers, matches = homography_to_target(reference, scene)
        name = scene.reference_paths[index].name if index < len(scene.reference_paths) else str(index)
        candidates.append({"index": index, "reference": name, "inliers": inliers, "matches": matches, "H": homography})
    order = sorted((c for c in candidates if c["inliers"] >= MIN_INLIERS), key=lambda c: -c["inliers"])
    out = scene.target.copy()
    covered = np.zeros_like(scene.mask)
    for candidate in order:
        reference = scene.references[candidate["index"]]
        warped = cv2.warpPerspective(reference, candidate["H"], (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        valid = cv2.warpPerspective(np.ones(reference.shape[:2], np.uint8), candidate["H"], (w, h),
                                    flags=cv2.INTER_NEAREST) > 0
        valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)  # drop the blended rim
        warped = match_colours(warped, scene.target, valid & ~scene.mask)
        new = valid & scene.mask & ~covered
        out[new] = warped[new]
        covered |= new
        candidate["coverage"] = float(new.sum() / scene.mask.sum())
    uncovered = scene.mask & ~covered
    if uncovered.any():
        bgr = cv2.inpaint(cv2.cvtColor(out, cv2.COLOR_RGB2BGR), uncovered.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    details = {
        "warped_coverage": float(covered.sum() / scene.mask.sum()),
        "telea_coverage": float(uncovered.sum() / scene.mask.sum()),
        "per_reference": [{k: v for k, v in c.items() if k not in ("H", "index")} for c in candidates],
    }
    if not order:
        details["why_no_warp"] = f"no reference had {MIN_INLIERS}+ homography inliers"
    return BaselineResult(out, details)


class GeometricBaseline(Baseline):
    name = "geometric"
    summary = "the best-matching reference warped into the hole by one SIFT + RANSAC homography; Telea the rest"

    class Config(ComponentConfig):
        name: Literal["geometric"] = "geometric"

    def complete(self, scene) -> BaselineResult:
        return geometric(scene)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(GeometricBaseline)
