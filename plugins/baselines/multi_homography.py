"""``multi-homography``: warping with several planes per reference, after TransFill (Zhou et al., CVPR 2021:
"TransFill: Reference-guided Image Inpainting by Merging Multiple Color and Spatial Transformations").

A scene seen from another viewpoint is not one plane: each depth has its own homography. Per reference,
sequential RANSAC over the SIFT matches (Lowe ratio 0.75, target keypoints on the known pixels only)
fits a homography (4 px, 5,000 iterations), removes its inliers and fits the next, up to
``max_planes`` planes of at least ``min_inliers`` inliers each. Every plane of every reference is a
candidate warp, its colours matched to the target on their overlap. Each hole pixel takes the candidate
that agrees best with the known pixels around the hole: a candidate's error (mean absolute RGB
difference) on the known band within ``band`` px of the hole is smoothed along the band (Gaussian,
sigma ``smooth`` px, normalised by the band's weight) and carried into the hole from the nearest band
pixel, where depth is most likely continuous. The choice is median-filtered (``clean`` px) to drop
speckle, and Telea fills what no candidate covers. With one plane it is ``geometric`` up to the choice
between references.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from realfill.components import SIDE_MAX, Baseline, BaselineResult, ComponentConfig
from realfill.hookspecs import hookimpl
from realfill_plugins.baselines.geometric import match_colours, sift_features


def matches_to_target(reference: np.ndarray, scene, ratio: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """(reference xy [N, 2], target xy [N, 2]) of the SIFT ratio-test matches, as ``geometric`` finds them."""
    known = cv2.erode((~scene.mask).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    kp_t, des_t = sift_features(scene.target, known)
    kp_r, des_r = sift_features(reference)
    empty = np.zeros((0, 2), np.float32)
    if des_t is None or des_r is None or len(kp_t) < 2 or len(kp_r) < 2:
        return empty, empty
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_r, des_t, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    if not good:
        return empty, empty
    return (np.float32([kp_r[m.queryIdx].pt for m in good]), np.float32([kp_t[m.trainIdx].pt for m in good]))


def sequential_homographies(src: np.ndarray, dst: np.ndarray, max_planes: int, min_inliers: int,
                            threshold: float = 4.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sequential RANSAC: [(H mapping src to dst, the plane's inlier dst points)], most inliers first."""
    planes = []
    remaining = np.arange(len(src))
    while len(planes) < max_planes and len(remaining) >= max(4, min_inliers):
        homography, inliers = cv2.findHomography(src[remaining].reshape(-1, 1, 2), dst[remaining].reshape(-1, 1, 2),
                                                 cv2.RANSAC, threshold, maxIters=5000, confidence=0.999)
        if homography is None:
            break
        inliers = inliers.ravel().astype(bool)
        if inliers.sum() < min_inliers:
            break
        planes.append((homography, dst[remaining[inliers]]))
        remaining = remaining[~inliers]
    return planes


def _band_error_in_hole(error: np.ndarray, band: np.ndarray, nearest: np.ndarray, smooth: float) -> np.ndarray:
    """A candidate's band error, smoothed along the band, read at each pixel's nearest band pixel."""
    weight = band.astype(np.float64)
    numerator = cv2.GaussianBlur(np.where(band, error, 0.0), (0, 0), smooth)
    denominator = cv2.GaussianBlur(weight, (0, 0), smooth)
    smoothed = np.where(denominator > 1e-9, numerator / np.maximum(denominator, 1e-9), np.inf)
    return smoothed.ravel()[nearest]


def multi_homography(scene, max_planes: int = 4, min_inliers: int = 12, band: int = 12, smooth: float = 24.0,
                     clean: int = 7, reach: float = 32.0, reject: float = 2.0) -> BaselineResult:
    h, w = scene.mask.shape
    hole = scene.mask
    target = scene.target.astype(np.float64)
    candidates, per_reference = [], []
    for index, reference in enumerate(scene.references):
        src, dst = matches_to_target(reference, scene)
        planes = sequential_homographies(src, dst, max_planes, min_inliers)
        name = scene.reference_paths[index].name if index < len(scene.reference_paths) else str(index)
        per_reference.append({"reference": name, "matches": int(len(src)), "planes": [int(len(p)) for _, p in planes]})
        for plane, (homography, _points) in enumerate(planes):
            warped = cv2.warpPerspective(reference, homography, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
            valid = cv2.warpPerspective(np.ones(reference.shape[:2], np.uint8), homography, (w, h),
                                        flags=cv2.INTER_NEAREST) > 0
            valid = cv2.erode(valid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            warped = match_colours(warped, scene.target, valid & ~hole)
            candidates.append({"reference": name, "plane": plane, "image": warped, "valid": valid})
    out = scene.target.copy()
    covered = np.zeros_like(hole)
    chosen_counts: dict[str, int] = {}
    if candidates:
        ring = cv2.dilate(hole.astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8)).astype(bool) & ~hole
        # the nearest band pixel of every pixel (labels of the distance transform to the band)
        distance, labels = cv2.distanceTransformWithLabels((~ring).astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        ring_index = np.flatnonzero(ring.ravel())
        label_to_pixel = np.zeros(labels.max() + 1, np.int64)
        ring_labels = labels.ravel()[ring_index]
        label_to_pixel[ring_labels] = ring_index
        nearest = label_to_pixel[labels.ravel()]
        # in float64: OpenCV's float32 distances would make a subnormal reach 0, and 0 / 0 nan
        with np.errstate(over="ignore"):  # a tiny reach: distance / reach is inf, and exp(-inf) the 0 meant
            near = np.exp(-distance.ravel().astype(np.float64) / reach) if reach > 0 else np.zeros(h * w)
        errors, overall = [], []
        for candidate in candidates:
            error = np.abs(candidate["image"].astype(np.float64) - target).mean(axis=2)
            seen = ring & candidate["valid"]
            errors.append(error)
            overall.append(float(error[seen].mean()) if seen.any() else np.inf)
        best_overall = min(overall)
        costs = np.full((len(candidates), h * w), np.inf)
        for c, candidate in enumerate(candidates):
            candidate["band_error"] = round(overall[c], 2)
            # a plane the known pixels contradict (or that sees none of them): Telea is better
            if not (np.isfinite(overall[c]) and overall[c] <= reject * best_overall):
                continue
            local = _band_error_in_hole(errors[c], ring & candidate["valid"], nearest, smooth)
            finite = np.isfinite(local)  # only there: near 0 (reach 0) times an inf local error is nan
            cost = np.full(h * w, overall[c])
            cost[finite] = near[finite] * local[finite] + (1 - near[finite]) * overall[c]
            costs[c] = np.where(candidate["valid"].ravel(), cost, np.inf)
        best = np.argmin(costs, axis=0)
        has = np.isfinite(costs.min(axis=0))
        choice = np.where(has, best + 1, 0).reshape(h, w).astype(np.uint8)  # 0 = no candidate
        if clean > 1:
            choice = np.where(hole, cv2.medianBlur(choice, clean), choice)
        for c, candidate in enumerate(candidates):
            take = hole & (choice == c + 1) & candidate["valid"]
            out[take] = candidate["image"][take]
            covered |= take
            if take.any():
                chosen_counts[f"{candidate['reference']}#{candidate['plane'] + 1}"] = int(take.sum())
    uncovered = hole & ~covered
    if uncovered.any():
        bgr = cv2.inpaint(cv2.cvtColor(out, cv2.COLOR_RGB2BGR), uncovered.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    total = float(hole.sum())
    details = {
        "candidates": len(candidates),
        "warped_coverage": float(covered.sum() / total),
        "telea_coverage": float(uncovered.sum() / total),
        "hole_share_by_plane": {k: round(v / total, 4) for k, v in chosen_counts.items()},
        "per_reference": per_reference,
    }
    if not candidates:
        details["why_no_warp"] = f"no reference had a plane of {min_inliers}+ homography inliers"
    return BaselineResult(out, details)


class MultiHomographyBaseline(Baseline):
    name = "multi-homography"
    summary = ("TransFill-style: several RANSAC planes per reference, each hole pixel from the plane that "
               "agrees with the known pixels nearest to it; Telea the rest")

    class Config(ComponentConfig):
        name: Literal["multi-homography"] = "multi-homography"
        # at most 16 planes a reference (each is a RANSAC over the remaining matches; TransFill fits a few,
        # and the per-pixel choice is a uint8 over every plane of every reference)
        max_planes: int = Field(4, ge=1, le=16)
        min_inliers: int = Field(12, ge=4, le=65536)  # at most the most SIFT matches (sift.max_keypoints)
        # the known band around the hole, px: at most 1024 (its square kernel is (2 band + 1)^2 bytes;
        # 10**9 asked OpenCV for 250 GB)
        band: int = Field(12, ge=1, le=1024)
        # the band error's Gaussian sigma, px: at most 256 (OpenCV's kernel is ~8 sigma wide, every pixel)
        smooth: float = Field(24.0, gt=0, le=256)
        # the median filter's side, px: at most 255 (OpenCV's median of uint8 takes any odd side; 10**9
        # asked for 250 GB)
        clean: int = Field(7, ge=1, le=255)
        reach: float = Field(32.0, ge=0, le=SIDE_MAX)  # px: beyond any image, the fall-off is flat
        reject: float = Field(2.0, ge=1, le=1e6)  # a ratio of errors: 1e6 keeps every plane

    def complete(self, scene) -> BaselineResult:
        c = self.config
        return multi_homography(scene, c.max_planes, c.min_inliers, c.band, c.smooth,
                                c.clean if c.clean % 2 else c.clean + 1, c.reach, c.reject)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(MultiHomographyBaseline)
