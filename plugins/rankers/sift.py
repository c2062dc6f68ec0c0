"""``sift``: OpenCV SIFT, Lowe's ratio test and a mutual nearest-neighbour check. The fast CPU default.

Candidate keypoints are detected only in the dilated fill region (only those can count); references
keep all theirs. No weights needed.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from realfill.hookspecs import hookimpl
from realfill.ranking import CorrespondenceConfig, CorrespondenceRanker


class SiftRanker(CorrespondenceRanker):
    name = "sift"
    summary = "OpenCV SIFT + ratio test + mutual check, RANSAC-verified, on the filled region (CPU, no weights)"
    needs = ()

    class Config(CorrespondenceConfig):
        name: Literal["sift"] = "sift"
        #: Lowe's ratio: the best match must be this much closer than the second best
        ratio: float = Field(0.8, gt=0, le=1)
        #: keep a match only if each keypoint is the other's nearest neighbour
        mutual: bool = True
        #: keypoints per image (0: all); at most 65536 (brute-force matching is quadratic in them: 10**12
        #: failed after the whole training and sampling)
        max_keypoints: int = Field(4096, ge=0, le=65536)
        #: on intensities in [0, 1]: above 1 no keypoint survives
        contrast_threshold: float = Field(0.04, gt=0, le=1)

    def _sift(self):
        return cv2.SIFT_create(nfeatures=self.config.max_keypoints, contrastThreshold=self.config.contrast_threshold)

    def extract(self, images, regions):
        sift = self._sift()
        features = []
        for index, image in enumerate(images):
            gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
            detect_mask = None if regions is None else regions[index].astype(np.uint8) * 255
            keypoints, descriptors = sift.detectAndCompute(gray, detect_mask)
            xy = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
            features.append((xy, descriptors if descriptors is not None else np.zeros((0, 128), np.float32)))
        return features

    def match(self, candidate_features, reference_features):
        (xy0, d0), (xy1, d1) = candidate_features, reference_features
        empty = np.zeros((0, 2), np.float32)
        if len(d0) < 1 or len(d1) < 2:
            return empty, empty
        matcher = cv2.BFMatcher(cv2.NORM_L2)
        forward = matcher.knnMatch(d0, d1, k=2)
        pairs = [(m.queryIdx, m.trainIdx) for m, n in (p for p in forward if len(p) == 2)
                 if m.distance < self.config.ratio * n.distance]
        if self.config.mutual and pairs:
            backward = matcher.match(d1, d0)
            nearest_back = {m.queryIdx: m.trainIdx for m in backward}
            pairs = [(i, j) for i, j in pairs if nearest_back.get(j) == i]
        if not pairs:
            return empty, empty
        index = np.array(pairs)
        return xy0[index[:, 0]], xy1[index[:, 1]]


@hookimpl
def realfill_register_rankers(registry):
    registry.add(SiftRanker)
