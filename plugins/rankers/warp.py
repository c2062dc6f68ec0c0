"""``warp``: align each reference to the target by feature correspondences, then score each candidate's
fill by how well it agrees with the aligned references inside the hole.

The correspondence rankers (``sift``, ``lightglue``, ``loftr``) count matches *inside the fill*: that needs
a fill sharp enough to carry keypoints. A low-resolution or blurry fill (the from-scratch ``scratch-pixel``
backbone) has none, every candidate scores 0, and the ranking is the sample order. This ranker puts the
correspondences where the pixels are real, the target's *known* region:

1. SIFT matches (ratio test, mutual check) between the target's known pixels and each reference, and a
   RANSAC homography per reference (a reference with fewer than ``min_inliers`` inliers is left out);
2. each reference warped into the target's frame, and its colours fitted to the target's on the known
   pixels it covers (a per-channel gain and offset: references differ in exposure);
3. each candidate's fill and each warped reference, both reduced to ``compare_side`` pixels (so a blurry
   fill is compared at the detail it has), compared inside the hole where the warp lands; the score is the
   negative mean absolute error (0-255 scale), averaged over references weighted by the hole pixels each covers.

A homography is exact for a planar scene or a rotating camera and approximate with parallax, where the
score still rewards the fill that continues the references' colours and layout. No weights needed.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from realfill.components import SIDE_MAX, ComponentConfig, Pixels, Ranker, RankScore
from realfill.hookspecs import hookimpl
from realfill.ranking import fill_region, geometric_inliers
from realfill_plugins.rankers.sift import SiftRanker


class WarpRanker(Ranker):
    name = "warp"
    summary = ("references aligned to the target's known pixels (SIFT + RANSAC homography), candidates scored "
               "by agreement with them in the hole; works on blurry fills (CPU, no weights)")
    needs = ()

    class Config(ComponentConfig):
        name: Literal["warp"] = "warp"
        #: Lowe's ratio for the SIFT matches between the target's known region and each reference
        ratio: float = Field(0.8, gt=0, le=1)
        max_keypoints: int = Field(4096, ge=0, le=65536)  # as sift's: matching is quadratic in them
        ransac_threshold: float = Field(3.0, gt=0, le=SIDE_MAX)  # pixels
        #: a reference whose homography has fewer inliers is not used (at most max_keypoints' most)
        min_inliers: int = Field(12, ge=4, le=65536)
        #: pixels the hole is grown by before the known region is taken (the composite's feathered band)
        known_margin: Pixels = 8
        #: the longer side, in pixels, at which fills and warped references are compared (at most 1024:
        #: every candidate and reference is held at it)
        compare_side: int = Field(64, ge=8, le=1024)
        #: fit each warped reference's colours to the target's on the known pixels it covers
        match_colours: bool = True
        #: align the references once per target (false: again for every candidate, the benchmark's baseline)
        cache_features: bool = True

    def __init__(self, config=None):
        super().__init__(config)
        self._references: list[np.ndarray] = []
        self._mask: np.ndarray | None = None
        self._known: np.ndarray | None = None  # the target's known pixels: the hole grown by known_margin, inverted
        self._alignment: tuple[str, list[dict]] | None = None  # (hash of the known pixels, per reference)

    def load(self) -> None:
        """Nothing to load: SIFT and OpenCV need no weights."""

    def prepare(self, references: list, mask) -> None:
        if not references:
            raise ValueError("prepare: at least one reference image is needed")
        self._references = [np.ascontiguousarray(np.asarray(r, dtype=np.uint8)) for r in references]
        self._mask = np.asarray(mask, dtype=bool)
        self._alignment = None

    # -- alignment, once per target ----------------------------------------------------------

    def _sift(self) -> SiftRanker:
        """The ``sift`` ranker's features and matching (ratio test, mutual check), with this config's settings."""
        return SiftRanker(SiftRanker.Config(ratio=self.config.ratio, max_keypoints=self.config.max_keypoints))

    def _align(self, target: np.ndarray) -> list[dict]:
        """Per reference: the homography reference -> target, the warped reference, where it lands, the
        colour fit, and the inlier correspondences (for the pictures)."""
        # only the known pixels: the fill being judged must not move the alignment it is judged by
        known_only = np.ascontiguousarray(np.where(self._known[..., None], target, 0).astype(np.uint8))
        key = hashlib.sha1(known_only.tobytes()).hexdigest()
        if self._alignment is not None and self._alignment[0] == key:
            return self._alignment[1]
        h, w = target.shape[:2]
        sift = self._sift()
        target_features = sift.extract([known_only], [self._known])[0]
        aligned = []
        for index, reference in enumerate(self._references):
            entry: dict = {"reference": index}
            target_xy, reference_xy = sift.match(target_features, sift.extract([reference], None)[0])
            entry["matches"] = int(len(target_xy))
            inliers = geometric_inliers(reference_xy, target_xy, "homography", self.config.ransac_threshold)
            entry["inliers"] = int(inliers.sum())
            entry["xy"] = (target_xy[inliers].astype(np.float32), reference_xy[inliers].astype(np.float32))
            if entry["inliers"] < self.config.min_inliers:
                entry["used"] = False
                aligned.append(entry)
                continue
            homography, _ = cv2.findHomography(reference_xy[inliers], target_xy[inliers], 0)
            if homography is None:
                entry["used"] = False
                aligned.append(entry)
                continue
            warped = cv2.warpPerspective(reference, homography, (w, h), flags=cv2.INTER_LINEAR)
            lands = cv2.warpPerspective(np.full(reference.shape[:2], 255, np.uint8), homography, (w, h),
                                        flags=cv2.INTER_NEAREST) > 0
            lands = cv2.erode(lands.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # no border blend
            warped = warped.astype(np.float64)
            overlap = lands & self._known
            if self.config.match_colours and overlap.sum() >= 16:
                for c in range(3):  # least-squares gain and offset, reference -> target, on shared known pixels
                    x, y = warped[..., c][overlap], target[..., c][overlap].astype(np.float64)
                    gain, offset = np.polyfit(x, y, 1) if x.std() > 1e-6 else (1.0, y.mean() - x.mean())
                    warped[..., c] = warped[..., c] * gain + offset
            entry.update(used=True, warped=np.clip(warped, 0, 255), lands=lands,
                         hole_coverage=float((lands & self._mask).sum() / max(1, self._mask.sum())))
            aligned.append(entry)
        self._alignment = (key, aligned)
        return aligned

    # -- scoring ---------------------------------------------------------------------------------

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        factor = min(1.0, self.config.compare_side / max(h, w))
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)

    def score(self, candidates: list) -> list[RankScore]:
        if self._mask is None:
            raise RuntimeError("score: call prepare(references, mask) first")
        candidates = [np.ascontiguousarray(np.asarray(c, dtype=np.uint8)) for c in candidates]
        if not candidates:
            return []
        for candidate in candidates:
            if candidate.shape[:2] != self._mask.shape:
                raise ValueError(f"score: a candidate is {candidate.shape[1]}x{candidate.shape[0]}, the mask "
                                 f"{self._mask.shape[1]}x{self._mask.shape[0]}")
        self._known = ~fill_region(self._mask, self.config.known_margin)
        hole = self._small(self._mask.astype(np.float32))
        scores = []
        for candidate in candidates:
            if not self.config.cache_features:
                self._alignment = None
            scores.append(self._score_one(candidate, self._align(candidate), hole))
        return scores

    def _score_one(self, candidate: np.ndarray, aligned: list[dict], hole: np.ndarray) -> RankScore:
        small = self._small(candidate)
        total, weight = 0.0, 0.0
        for entry in aligned:
            if not entry["used"]:
                continue
            if "small" not in entry:
                entry["small"] = (self._small(entry["warped"]), self._small(entry["lands"].astype(np.float32)))
            warped, lands = entry["small"]
            w = hole * lands  # hole pixels this reference covers (fractional at the edges)
            if w.sum() < 1.0:
                continue
            total += float((np.abs(small - warped).mean(axis=2) * w).sum())
            weight += float(w.sum())
        per_reference = [{k: a[k] for k in ("reference", "matches", "inliers", "used")}
                         | ({"hole_coverage": round(a["hole_coverage"], 3)} if a["used"] else {}) for a in aligned]
        return RankScore(-total / weight if weight > 0 else 0.0, sum(a["matches"] for a in aligned),
                         sum(a["inliers"] for a in aligned), per_reference, [a["xy"] for a in aligned])


@hookimpl
def realfill_register_rankers(registry):
    registry.add(WarpRanker)
