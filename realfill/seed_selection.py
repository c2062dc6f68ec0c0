"""Seed selection (RealFill section 4.3): rank candidate completions with any
:class:`realfill.components.Ranker`, keep the best, write ``ranking.json`` and the correspondence pictures."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from realfill.atomic import atomic_write_text
from realfill.components import Ranker, RankScore
from realfill.correspondence_pictures import write_correspondence_pictures
from realfill.errors import UserError

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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(ranking, indent=2) + "\n")


def read_ranking(path: str | Path) -> list[dict]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such ranking file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
