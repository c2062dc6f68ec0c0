"""Seed selection: rank candidate completions by correspondences between the filled region and the references.

RealFill (Tang et al. 2024, section 4.3) keeps the samples whose *filled region* has the most feature
correspondences with the reference photos. This module holds what every ranker shares:

- :class:`CorrespondenceRanker`, the base of the built-in rankers. A subclass only says how to
  ``extract`` features and how to ``match`` two feature sets; the base extracts the references' features
  once per scene (``prepare``), extracts each candidate's features once (in batches of ``batch_size``),
  keeps only the correspondences whose candidate-side keypoint lies in the dilated fill region, and
  optionally verifies them geometrically (RANSAC), scoring by inliers instead of raw matches.
  ``cache_features = false`` is the naive path (both sides extracted again for every pair): the
  benchmark's baseline.
- the geometry helpers rankers share (the fill region, RANSAC inliers); their weights are found by
  :mod:`realfill.weights`.

Ranking a set of candidates with any ranker is :mod:`realfill.seed_selection`; the pictures of the
correspondences are :mod:`realfill.correspondence_pictures`.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
import torch
from pydantic import Field

from realfill.components import SIDE_MAX, THREADS_MAX, ComponentConfig, Pixels, Ranker, RankScore
from realfill.device import torch_threads

# -- shared config --------------------------------------------------------------------------------


class CorrespondenceConfig(ComponentConfig):
    """Settings every correspondence ranker shares (each ranker's Config adds ``name`` and its own)."""

    #: pixels (at the candidate's size) the fill mask grows by before counting; correspondences whose
    #: candidate-side keypoint lies outside it do not count
    region_dilate: Pixels = 8
    #: geometric verification of the in-region correspondences; the score is then the inlier count
    geometric_check: Literal["none", "fundamental", "homography"] = "fundamental"
    #: pixels (at most SIDE_MAX: beyond any image, every match an inlier)
    ransac_threshold: float = Field(3.0, gt=0, le=SIDE_MAX)
    #: images are matched with their longer side at most this many pixels (coordinates map back)
    max_side: int = Field(640, ge=32, le=SIDE_MAX)
    #: candidates extracted per batch (None: 8 on a GPU, 1 on a CPU, where batching measured no faster
    #: and a DISK batch of 4 added 439 MiB of peak memory against 157 MiB one at a time)
    batch_size: int | None = Field(None, ge=1, le=4096)  # at most sample.num_samples' most
    #: extract each reference's and each candidate's features once (false: again for every pair)
    cache_features: bool = True
    #: torch intra-op threads while ranking (None: torch's default). On a small CPU shared with other
    #: work, 1 avoids OpenMP oversubscription, which slowed LightGlue's matching ~40x here with 2 threads
    threads: int | None = Field(None, ge=1, le=THREADS_MAX)


# -- region and geometry helpers ------------------------------------------------------------------


def fill_region(mask: np.ndarray, dilate: int) -> np.ndarray:
    """The fill mask (HxW bool) grown by ``dilate`` pixels with a round kernel."""
    mask = np.asarray(mask, dtype=bool)
    if dilate <= 0:
        return mask.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def in_region(xy: np.ndarray, region: np.ndarray) -> np.ndarray:
    """For (x, y) points [N, 2] in pixel coordinates, whether each lies in the bool ``region``."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    h, w = region.shape
    col = np.rint(xy[:, 0]).astype(np.int64)
    row = np.rint(xy[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    keep = np.zeros(len(xy), dtype=bool)
    keep[inside] = region[row[inside], col[inside]]
    return keep


def geometric_inliers(xy0: np.ndarray, xy1: np.ndarray, model: str, threshold: float) -> np.ndarray:
    """RANSAC (OpenCV's MAGSAC++, seeded) inlier flags of the correspondences under a fundamental
    matrix or a homography; all False when there are too few to fit one."""
    n = len(xy0)
    needed = 8 if model == "fundamental" else 4
    if n < needed:
        return np.zeros(n, dtype=bool)
    p0 = np.ascontiguousarray(xy0, dtype=np.float64).reshape(-1, 1, 2)
    p1 = np.ascontiguousarray(xy1, dtype=np.float64).reshape(-1, 1, 2)
    cv2.setRNGSeed(0)
    try:
        if model == "fundamental":
            _, flags = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, threshold, 0.999, 10000)
        else:
            _, flags = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, threshold, maxIters=10000, confidence=0.999)
    except cv2.error:
        return np.zeros(n, dtype=bool)
    if flags is None or len(flags) != n:
        return np.zeros(n, dtype=bool)
    return flags.ravel().astype(bool)


def _resize_to(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` with its longer side at most ``max_side``, and the factor from the result back to it."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0
    factor = max_side / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return resized, w / size[0]


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


# -- the base of the built-in rankers --------------------------------------------------------------


class CorrespondenceRanker(Ranker):
    """A ranker from two primitives: ``extract`` features of images and ``match`` two feature sets.

    Subclasses set ``Config`` (a :class:`CorrespondenceConfig` with their ``name``) and implement
    :meth:`extract` and :meth:`match`; everything else (caching, batching, resizing, the region filter,
    the geometric check, the score) lives here, identical for every ranker.
    """

    Config = CorrespondenceConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._references: list[np.ndarray] = []
        self._reference_features: list[Any] = []
        self._reference_scales: list[float] = []
        self._region: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    # -- what a subclass implements ---------------------------------------------------------

    def load(self) -> Any:
        """Load models and weights now, so that missing weights fail before any work (none here)."""
        return None

    def default_batch_size(self) -> int:
        """Candidates per batch when the config leaves ``batch_size`` unset: 8 on a GPU, else 1."""
        device = getattr(self.config, "device", "cpu")
        if device == "auto":
            return 8 if torch.cuda.is_available() else 1
        return 8 if str(device).startswith("cuda") else 1

    def extract(self, images: list[np.ndarray], regions: list[np.ndarray] | None) -> list[Any]:
        """Features of same-size HxWx3 uint8 RGB ``images`` (one entry per image).

        :param regions: for candidates, the dilated fill region of each image (HxW bool, at the image's
            size): a ranker may keep only keypoints inside it (only those can count). None for references.
        """
        raise NotImplementedError

    def match(self, candidate_features: Any, reference_features: Any) -> tuple[np.ndarray, np.ndarray]:
        """Correspondences between one candidate and one reference: (candidate_xy [N,2], reference_xy [N,2])
        in the pixel coordinates of the images given to :meth:`extract`."""
        raise NotImplementedError

    # -- the contract -------------------------------------------------------------------------

    def prepare(self, references: list, mask) -> None:
        with torch_threads(self.config.threads):
            self._prepare(references, mask)

    def score(self, candidates: list) -> list[RankScore]:
        with torch_threads(self.config.threads):
            return self._score(candidates)

    def _prepare(self, references: list, mask) -> None:
        if not references:
            raise ValueError("prepare: at least one reference image is needed")
        self._mask = np.asarray(mask, dtype=bool)
        self._region = fill_region(self._mask, self.config.region_dilate)
        self._references, self._reference_scales = [], []
        for reference in references:
            resized, scale = _resize_to(np.asarray(reference), self.config.max_side)
            self._references.append(resized)
            self._reference_scales.append(scale)
        if self.config.cache_features:
            self._reference_features = [self.extract([ref], None)[0] for ref in self._references]
        else:
            self._reference_features = []

    def _score(self, candidates: list) -> list[RankScore]:
        if self._region is None:
            raise RuntimeError("score: call prepare(references, mask) first")
        scores: list[RankScore] = []
        batch = self.config.batch_size or self.default_batch_size()
        for start in range(0, len(candidates), batch):
            chunk = [np.asarray(c) for c in candidates[start : start + batch]]
            for candidate in chunk:
                if candidate.shape[:2] != self._region.shape:
                    raise ValueError(
                        f"score: a candidate is {candidate.shape[1]}x{candidate.shape[0]}, the mask "
                        f"{self._region.shape[1]}x{self._region.shape[0]}"
                    )
            resized = [_resize_to(c, self.config.max_side) for c in chunk]
            images = [r[0] for r in resized]
            scale = resized[0][1]
            work_region = resize_mask(self._region, images[0].shape[:2])
            if self.config.cache_features:
                features = self.extract(images, [work_region] * len(images))
                pairs = [[self.match(f, rf) for rf in self._reference_features] for f in features]
            else:  # the naive path: both sides extracted again for every pair
                pairs = [
                    [
                        self.match(self.extract([image], [work_region])[0], self.extract([ref], None)[0])
                        for ref in self._references
                    ]
                    for image in images
                ]
            scores.extend(self._score_pairs(p, scale) for p in pairs)
        return scores

    def _score_pairs(self, pairs: list[tuple[np.ndarray, np.ndarray]], scale: float) -> RankScore:
        check = self.config.geometric_check
        total_matches, total_inliers = 0, 0
        per_reference, drawn = [], []
        for index, (cand_xy, ref_xy) in enumerate(pairs):
            cand_xy = np.asarray(cand_xy, dtype=np.float64).reshape(-1, 2) * scale
            ref_xy = np.asarray(ref_xy, dtype=np.float64).reshape(-1, 2) * self._reference_scales[index]
            keep = in_region(cand_xy, self._region)
            cand_xy, ref_xy = cand_xy[keep], ref_xy[keep]
            entry: dict[str, Any] = {"reference": index, "matches": int(len(cand_xy))}
            total_matches += len(cand_xy)
            if check != "none":
                inliers = geometric_inliers(cand_xy, ref_xy, check, self.config.ransac_threshold)
                entry["inliers"] = int(inliers.sum())
                total_inliers += int(inliers.sum())
                cand_xy, ref_xy = cand_xy[inliers], ref_xy[inliers]
            per_reference.append(entry)
            drawn.append((cand_xy.astype(np.float32), ref_xy.astype(np.float32)))
        inliers_total = total_inliers if check != "none" else None
        score = float(total_inliers if check != "none" else total_matches)
        return RankScore(score, total_matches, inliers_total, per_reference, drawn)
