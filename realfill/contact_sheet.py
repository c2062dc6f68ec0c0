"""The contact sheet of a run: references, the masked target (and the ground truth, if any), then the
ranked samples with their rank and score, as one PNG a person can judge at a glance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 14
GAP = 4
BACKGROUND = (255, 255, 255)


def _tile(image: np.ndarray, label: str, height: int) -> Image.Image:
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    width = max(1, round(picture.width * height / picture.height))
    picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    tile = Image.new("RGB", (width, height + LABEL_HEIGHT), BACKGROUND)
    tile.paste(picture, (0, LABEL_HEIGHT))
    ImageDraw.Draw(tile).text((2, 1), label, fill=(0, 0, 0), font=ImageFont.load_default())
    return tile


def _row(tiles: list[Image.Image]) -> Image.Image:
    width = sum(t.width for t in tiles) + GAP * (len(tiles) - 1)
    row = Image.new("RGB", (width, max(t.height for t in tiles)), BACKGROUND)
    x = 0
    for tile in tiles:
        row.paste(tile, (x, 0))
        x += tile.width + GAP
    return row


def contact_sheet(
    references: Sequence[np.ndarray],
    masked_target: np.ndarray,
    ranked: Sequence[tuple[str, np.ndarray]],
    gt: np.ndarray | None = None,
    *,
    height: int = 128,
    per_row: int = 6,
    max_samples: int = 24,
    correspondences: Sequence[tuple[str, np.ndarray]] = (),
    notice: str | None = None,
) -> Image.Image:
    """Rows: ``notice`` (e.g. a backbone's disclaimer), if any; the references; the masked target and the
    ground truth; the ranked samples, best first, labelled by the caller (e.g. ``#1 score 42``),
    ``per_row`` to a row, at most ``max_samples``; then the correspondence pictures of the top samples."""
    rows = []
    if notice:
        banner = Image.new("RGB", (8 * len(notice) + 8, LABEL_HEIGHT + 4), (255, 240, 200))
        ImageDraw.Draw(banner).text((4, 3), notice, fill=(120, 40, 0), font=ImageFont.load_default())
        rows.append(banner)
    rows.append(_row([_tile(r, f"reference {i + 1}", height) for i, r in enumerate(references)]))
    inputs = [_tile(masked_target, "masked target", height)]
    if gt is not None:
        inputs.append(_tile(gt, "ground truth", height))
    rows.append(_row(inputs))
    samples = [_tile(image, label, height) for label, image in list(ranked)[:max_samples]]
    rows.extend(_row(samples[i : i + per_row]) for i in range(0, len(samples), per_row))
    rows.extend(_row([_tile(image, label, height)]) for label, image in correspondences)
    sheet = Image.new("RGB", (max(r.width for r in rows) + 2 * GAP, sum(r.height + GAP for r in rows) + GAP), BACKGROUND)
    y = GAP
    for row in rows:
        sheet.paste(row, (GAP, y))
        y += row.height + GAP
    return sheet
