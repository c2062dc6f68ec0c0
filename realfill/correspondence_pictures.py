"""Pictures of a ranker's correspondences: the candidate beside each reference, matches drawn as lines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from realfill.atomic import atomic_dir
from realfill.components import RankScore
from realfill.ranking import resize_mask

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
        outline = resize_mask(np.asarray(mask, dtype=bool), left.shape[:2]).astype(np.uint8)
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
