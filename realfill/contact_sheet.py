"""The contact sheet of a run, one PNG a person can judge at 100%:

1. the inputs: the references and the masked target;
2. the result (the ranker's pick) beside the baselines and the ground truth, each labelled with its
   scores when there are any;
3. the ranked samples, best first, with their ranker scores;
4. the correspondence pictures of the top samples, or, when they would make the sheet long (more than
   one row), a line naming ``contact_sheet_correspondences.png``, which holds them.

Tiles are the target's height when it is at most ``MAX_TILE`` px (never enlarged), else ``MAX_TILE``;
rows are laid out to the sheet's width (a whole number of target-sized tiles, about ``TARGET_WIDTH`` px),
so they fill it instead of leaving most of the sheet empty.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from realfill.atomic import save_image

from realfill.scene import read_rgb
CONTACT_SHEET = "contact_sheet.png"
CORRESPONDENCE_SHEET = "contact_sheet_correspondences.png"
MAX_TILE = 320  # px: the tile height for targets taller than this
TARGET_WIDTH = 1600  # px: about how wide a sheet is (a whole number of target-sized tiles)
FONT_SIZE = 15
LABEL_HEIGHT = 20
HEADING_HEIGHT = 26
GAP = 6
MARGIN = 10
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
HEADING_INK = (70, 70, 140)


def _font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _tile(image: np.ndarray, labels: Sequence[str], height: int, font, lines: int = 1) -> Image.Image:
    """The image at ``height`` px under its labels, one a line (``lines`` lines at least, so that the
    pictures of a row line up)."""
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if picture.height != height:
        width = max(1, round(picture.width * height / picture.height))
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    labels = [label for label in labels if label]
    lines = max(lines, len(labels), 1)
    tile = Image.new("RGB", (picture.width, height + LABEL_HEIGHT * lines), BACKGROUND)
    draw = ImageDraw.Draw(tile)
    for index, label in enumerate(labels):
        draw.text((2, 2 + LABEL_HEIGHT * index), _fit(draw, label, picture.width - 4, font), fill=INK, font=font)
    tile.paste(picture, (0, LABEL_HEIGHT * lines))
    return tile


def _tiles(items: Sequence[tuple[list[str], np.ndarray]], height: int, font) -> list[Image.Image]:
    lines = max((len(labels) for labels, _ in items), default=1)
    return [_tile(image, labels, height, font, lines) for labels, image in items]


def _flow(tiles: list[Image.Image], width: int) -> list[Image.Image]:
    """Rows of tiles, left to right, each row as full as the width allows."""
    rows, current, used = [], [], 0
    for tile in tiles:
        if current and used + GAP + tile.width > width:
            rows.append(current)
            current, used = [], 0
        used += (GAP if current else 0) + tile.width
        current.append(tile)
    if current:
        rows.append(current)
    images = []
    for row in rows:
        image = Image.new("RGB", (sum(t.width for t in row) + GAP * (len(row) - 1), max(t.height for t in row)), BACKGROUND)
        x = 0
        for tile in row:
            image.paste(tile, (x, 0))
            x += tile.width + GAP
        images.append(image)
    return images


def _heading(text: str, width: int, font, fill=(255, 255, 255), ink=HEADING_INK) -> Image.Image:
    image = Image.new("RGB", (width, HEADING_HEIGHT), fill)
    draw = ImageDraw.Draw(image)
    draw.text((0, 5), _fit(draw, text, width, font), fill=ink, font=font)
    return image


def _stack(rows: list[Image.Image], width: int) -> Image.Image:
    sheet = Image.new("RGB", (width + 2 * MARGIN, sum(r.height + GAP for r in rows) + 2 * MARGIN - GAP), BACKGROUND)
    y = MARGIN
    for row in rows:
        sheet.paste(row, (MARGIN, y))
        y += row.height + GAP
    return sheet


def tile_height(target_height: int) -> int:
    """The target's own height up to ``MAX_TILE`` (never enlarged), else ``MAX_TILE``."""
    return min(int(target_height), MAX_TILE)


def sheet_width(target: np.ndarray, height: int, side_by_side: int = 0) -> int:
    """A whole number (3 to 6) of target-sized tiles, about ``TARGET_WIDTH`` px, or up to 6 tiles so that
    ``side_by_side`` of them (the ground truth, the result and the baselines) share one row."""
    tile_w = max(1, round(target.shape[1] * height / target.shape[0]))
    columns = min(6, max(3, round(TARGET_WIDTH / (tile_w + GAP)), side_by_side))
    return columns * tile_w + (columns - 1) * GAP


def contact_sheets(
    references: Sequence[np.ndarray],
    masked_target: np.ndarray,
    ranked: Sequence[tuple[str, np.ndarray]],
    gt: np.ndarray | None = None,
    *,
    correspondences: Sequence[tuple[str, np.ndarray]] = (),
    notice: str | None = None,
    baselines: Sequence[tuple[str, np.ndarray]] = (),
    result_label: str | None = None,
    max_samples: int = 24,
) -> tuple[Image.Image, Image.Image | None]:
    """(the sheet, the correspondence sheet or None when they fit on the sheet in one row).

    ``ranked``: (label, image) best first, labelled by the caller (e.g. ``#1 003 score 42``); the first is
    the result. ``baselines``: (label, image), e.g. ``("geometric · PSNR 15.86", image)``.
    ``result_label``: the result's label, lines split at newlines (default: the first sample's)."""
    font, small = _font(), _font(FONT_SIZE - 2)
    height = tile_height(masked_target.shape[0])
    width = sheet_width(masked_target, height, (gt is not None) + bool(ranked) + len(baselines))
    rows: list[Image.Image] = []
    if notice:
        rows.append(_heading(notice, width, small, fill=(255, 240, 200), ink=(120, 40, 0)))
    rows.append(_heading("inputs: the references and the masked target", width, font))
    inputs = [_tile(r, [f"reference {i + 1}"], height, small) for i, r in enumerate(references)]
    inputs.append(_tile(masked_target, ["masked target"], height, small))
    rows += _flow(inputs, width)
    ranked = list(ranked)
    if ranked or baselines or gt is not None:
        rows.append(_heading("the result beside the baselines and the ground truth", width, font))
        side = []
        if gt is not None:
            side.append((["ground truth"], gt))
        if ranked:
            side.append((["result", *(result_label or ranked[0][0]).split("\n")], ranked[0][1]))
        side += [(label.split("\n"), image) for label, image in baselines]
        rows += _flow(_tiles(side, height, small), width)
    if ranked:
        shown = ranked[:max_samples]
        more = f" (the best {len(shown)} of {len(ranked)})" if len(ranked) > len(shown) else ""
        rows.append(_heading(f"ranked samples, best first, with the ranker's scores{more}", width, font))
        rows += _flow([_tile(image, [label], height, small) for label, image in shown], width)
    extra = None
    if correspondences:
        pictures = [_tile(image, [label], height, small) for label, image in correspondences]
        flowed = _flow(pictures, width)
        if len(flowed) <= 1:
            rows.append(_heading("correspondences between the filled region and the references", width, font))
            rows += flowed
        else:
            rows.append(_heading(f"correspondences of the top samples: {CORRESPONDENCE_SHEET}", width, font))
            extra = _stack([_heading("correspondences between the filled region and the references", width, font),
                            *flowed], width)
    return _stack(rows, width), extra


def contact_sheet(*args, **kwargs) -> Image.Image:
    """The sheet alone (see :func:`contact_sheets`); correspondences that do not fit are left out."""
    return contact_sheets(*args, **kwargs)[0]


def write_contact_sheets(directory: Path, *args, **kwargs) -> Path:
    """Draw and write ``contact_sheet.png`` (and ``contact_sheet_correspondences.png`` when needed, else
    remove a stale one) into ``directory``; returns the sheet's path."""
    directory = Path(directory)
    sheet, extra = contact_sheets(*args, **kwargs)
    path = directory / CONTACT_SHEET
    _save(sheet, path)
    if extra is not None:
        _save(extra, directory / CORRESPONDENCE_SHEET)
    else:
        (directory / CORRESPONDENCE_SHEET).unlink(missing_ok=True)
    return path


def _save(image: Image.Image, path: Path) -> None:
    save_image(path, image)  # atomic, and a full disk is one line (realfill.runfolder)


def ranked_from_run(run_dir: Path, samples_dir: Path | None = None) -> tuple[list, list]:
    """(ranked, correspondences) as :func:`contact_sheets` takes them, read back from a run folder's
    ``ranking.json``, samples and ``correspondences/``."""
    run_dir = Path(run_dir)
    samples_dir = Path(samples_dir) if samples_dir is not None else run_dir / "samples"
    ranking = json.loads((run_dir / "ranking.json").read_text())
    entries = ranking["ranking"] if isinstance(ranking, dict) else ranking
    ranked = [(f"#{r['rank']} {Path(r['file']).stem} score {r['score']:.4g}", read_rgb(samples_dir / r["file"]))
              for r in entries if (samples_dir / r["file"]).is_file()]
    pictures = [(f"correspondences of #{r['rank']} {Path(r['file']).stem}", read_rgb(path))
                for r in entries if (path := run_dir / "correspondences" / f"{r['rank']:03d}.png").is_file()]
    return ranked, pictures
