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
- :func:`rank_candidates`, which any :class:`realfill.components.Ranker` goes through: order, ranks,
  ``ranking.json``, and the correspondence pictures of the top candidates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from realfill.components import ComponentConfig, Ranker, RankScore
from realfill.errors import UserError

# -- shared config --------------------------------------------------------------------------------


class CorrespondenceConfig(ComponentConfig):
    """Settings every correspondence ranker shares (each ranker's Config adds ``name`` and its own)."""

    #: pixels (at the candidate's size) the fill mask grows by before counting; correspondences whose
    #: candidate-side keypoint lies outside it do not count
    region_dilate: int = Field(8, ge=0)
    #: geometric verification of the in-region correspondences; the score is then the inlier count
    geometric_check: Literal["none", "fundamental", "homography"] = "fundamental"
    ransac_threshold: float = Field(3.0, gt=0)
    #: images are matched with their longer side at most this many pixels (coordinates map back)
    max_side: int = Field(640, ge=32)
    #: candidates extracted per batch (None: 8 on a GPU, 1 on a CPU, where batching measured no faster
    #: and a DISK batch of 4 added 439 MiB of peak memory against 157 MiB one at a time)
    batch_size: int | None = Field(None, ge=1)
    #: extract each reference's and each candidate's features once (false: again for every pair)
    cache_features: bool = True
    #: torch intra-op threads while ranking (None: torch's default). On a small CPU shared with other
    #: work, 1 avoids OpenMP oversubscription, which slowed LightGlue's matching ~40x here with 2 threads
    threads: int | None = Field(None, ge=1)


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


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def torch_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (None: leave torch's setting alone)."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
            import torch

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
            work_region = _resize_mask(self._region, images[0].shape[:2])
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


# -- ranking a set of candidates -------------------------------------------------------------------


def check_candidate_sizes(scene, candidates: Sequence[np.ndarray], names: Sequence[str]) -> None:
    """Every candidate must have the target's size: a sample at another size is from another scene or
    another tool's crop, and resizing would move its hole away from the mask. One line naming the file."""
    h, w = scene.target.shape[:2]
    for candidate, name in zip(candidates, names, strict=True):
        shape = np.asarray(candidate).shape
        if len(shape) != 3 or shape[2] != 3:
            raise UserError(f"{name}: expected an RGB image, got an array of shape {shape}")
        if shape[:2] != (h, w):
            raise UserError(
                f"{name}: candidate is {shape[1]}x{shape[0]} but the scene's target is {w}x{h}; "
                "rank only completions of this scene's target, at its size"
            )


def score_candidates(ranker: Ranker, scene, candidates: Sequence[np.ndarray], names: Sequence[str]) -> list[RankScore]:
    """The ranker's verdict on each candidate, in candidate order (references prepared once)."""
    if len(candidates) != len(names):
        raise ValueError(f"{len(candidates)} candidates but {len(names)} names")
    check_candidate_sizes(scene, candidates, names)
    ranker.prepare(list(scene.references), scene.mask)
    scores = ranker.score(list(candidates))
    if len(scores) != len(candidates):
        raise RuntimeError(f"ranker '{ranker.name}' returned {len(scores)} scores for {len(candidates)} candidates")
    return scores


def order_by_score(scores: Sequence[RankScore], names: Sequence[str]) -> list[dict]:
    """Ranking entries, best first: higher score first, ties in candidate order. ``rank`` 1 is the best."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i].score, i))
    return [
        {"file": names[i], "score": scores[i].score, "rank": rank, "details": scores[i].details()}
        for rank, i in enumerate(order, start=1)
    ]


def rank_candidates(
    ranker: Ranker,
    scene,
    candidates: list[np.ndarray],
    names: list[str],
    *,
    run_dir: str | Path | None = None,
    keep: int | None = None,
    keep_fraction: float | None = None,
    pictures: int = 4,
) -> list[dict]:
    """Rank ``candidates`` (HxWx3 uint8 RGB, the target's size) of ``scene`` with ``ranker``.

    Returns one dict per candidate, best first: ``file`` (its name), ``score``, ``rank`` (1 = best),
    ``details`` (``matches``, ``inliers``, ``per_reference``), ``ranker`` (its name) and ``kept``
    (see :func:`mark_kept`).
    With ``run_dir``, also writes ``run_dir/ranking.json`` and ``run_dir/correspondences/NNN.png``
    for the ``pictures`` best candidates (NNN = the rank).
    """
    scores = score_candidates(ranker, scene, candidates, names)
    ranking = order_by_score(scores, names)
    for entry in ranking:
        entry["ranker"] = ranker.name
    mark_kept(ranking, keep=keep, keep_fraction=keep_fraction)
    if run_dir is not None:
        run_dir = Path(run_dir)
        write_ranking(run_dir / "ranking.json", ranking)
        write_correspondence_pictures(run_dir, scene, candidates, names, scores, ranking, top=pictures)
    return ranking


def kept_count(total: int, keep: int | None = None, keep_fraction: float | None = None) -> int:
    """How many of ``total`` ranked samples to keep: ``keep`` if given, else ``ceil(keep_fraction * total)``
    (the paper keeps the top 25-75%), at least one, at most all."""
    if total == 0:
        return 0
    if keep is not None:
        if keep < 1:
            raise UserError(f"keep: {keep} is not a positive number of samples")
        return min(keep, total)
    fraction = 0.25 if keep_fraction is None else keep_fraction
    if not 0 < fraction <= 1:
        raise UserError(f"keep_fraction: {fraction} must be in (0, 1]")
    return max(1, min(total, math.ceil(fraction * total - 1e-9)))


def mark_kept(ranking: list[dict], keep: int | None = None, keep_fraction: float | None = None) -> list[dict]:
    """Set ``kept`` on each entry of a best-first ranking; returns the kept entries."""
    count = kept_count(len(ranking), keep, keep_fraction)
    for entry in ranking:
        entry["kept"] = entry["rank"] <= count
    return ranking[:count]


def write_ranking(path: str | Path, ranking: list[dict]) -> None:
    from realfill.runfolder import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(ranking, indent=2) + "\n")


def read_ranking(path: str | Path) -> list[dict]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such ranking file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


# -- pictures ------------------------------------------------------------------------------------

_COLOURS = [(0, 255, 0), (255, 170, 0), (0, 200, 255), (255, 0, 200), (255, 255, 0)]


def draw_correspondences(
    candidate: np.ndarray,
    references: Sequence[np.ndarray],
    rank_score: RankScore,
    mask: np.ndarray | None = None,
    height: int = 256,
    max_lines: int = 60,
) -> np.ndarray:
    """One RGB picture: the candidate (fill region outlined when ``mask`` is given) left, the references
    right, each scaled to ``height`` pixels, with a line per counted correspondence (one colour per
    reference; at most ``max_lines`` per reference, evenly chosen) and the score written on top."""
    def scaled(image: np.ndarray) -> tuple[np.ndarray, float]:
        f = height / image.shape[0]
        size = (max(1, round(image.shape[1] * f)), height)
        return cv2.resize(np.ascontiguousarray(image), size, interpolation=cv2.INTER_AREA), f

    left, f0 = scaled(candidate)
    left = left.copy()
    if mask is not None:
        outline = _resize_mask(np.asarray(mask, dtype=bool), left.shape[:2]).astype(np.uint8)
        contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(left, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
    panels, offsets, factors = [left], [0], [f0]
    x = left.shape[1]
    for reference in references:
        panel, f = scaled(reference)
        panels.append(panel)
        offsets.append(x)
        factors.append(f)
        x += panel.shape[1]
    canvas = np.ascontiguousarray(np.concatenate(panels, axis=1))
    for index, pair in enumerate(rank_score.correspondences[: len(references)]):
        cand_xy, ref_xy = (np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in pair)
        if len(cand_xy) > max_lines:
            pick = np.linspace(0, len(cand_xy) - 1, max_lines).round().astype(int)
            cand_xy, ref_xy = cand_xy[pick], ref_xy[pick]
        colour = _COLOURS[index % len(_COLOURS)]
        for (x0, y0), (x1, y1) in zip(cand_xy, ref_xy, strict=True):
            p0 = (int(round(x0 * f0)), int(round(y0 * f0)))
            p1 = (int(round(x1 * factors[index + 1])) + offsets[index + 1], int(round(y1 * factors[index + 1])))
            cv2.line(canvas, p0, p1, colour, 1, cv2.LINE_AA)
            cv2.circle(canvas, p0, 2, colour, -1, cv2.LINE_AA)
            cv2.circle(canvas, p1, 2, colour, -1, cv2.LINE_AA)
    counted = rank_score.inliers if rank_score.inliers is not None else rank_score.matches
    label = f"score {rank_score.score:g}  matches {rank_score.matches}"
    if rank_score.inliers is not None:
        label += f"  inliers {counted}"
    (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(canvas, (0, 0), (text_w + 10, text_h + 10), (0, 0, 0), -1)
    cv2.putText(canvas, label, (5, text_h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_correspondence_pictures(
    run_dir: str | Path,
    scene,
    candidates: Sequence[np.ndarray],
    names: Sequence[str],
    scores: Sequence[RankScore],
    ranking: list[dict],
    top: int = 4,
) -> list[Path]:
    """``run_dir/correspondences/NNN.png`` (NNN = rank) for the ``top`` best candidates; older pictures
    there are removed first so the folder always matches ``ranking.json``."""
    from PIL import Image

    from realfill.runfolder import atomic_dir

    folder = Path(run_dir) / "correspondences"
    index_of = {name: i for i, name in enumerate(names)}
    written = []
    with atomic_dir(folder) as building:  # the old pictures go with the swap: the folder matches ranking.json
        for entry in ranking[: max(0, top)]:
            i = index_of[entry["file"]]
            picture = draw_correspondences(candidates[i], scene.references, scores[i], mask=scene.mask)
            Image.fromarray(picture).save(building / f"{entry['rank']:03d}.png")
            written.append(folder / f"{entry['rank']:03d}.png")
    return written
