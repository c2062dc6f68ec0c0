"""The contact sheet is readable at 100%: target-sized tiles (at least 192 px or the target's own size,
never enlarged), rows that fill the width, the result beside the baselines and the ground truth, and the
correspondence pictures in their own file when they would make the sheet long. Real photos throughout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from realfill.contact_sheet import (
    CORRESPONDENCE_SHEET,
    GAP,
    MARGIN,
    MAX_TILE,
    contact_sheets,
    tile_height,
    write_contact_sheets,
)


def _scene(height: int):
    photo = data.astronaut()
    width = round(photo.shape[1] * height / photo.shape[0] * 1.4)
    photo = np.asarray(Image.fromarray(photo).resize((width, height)))
    masked = photo.copy()
    masked[:, width * 2 // 3 :] = 0
    references = [np.asarray(Image.fromarray(data.coffee()).resize((width, height))), photo[:, ::-1]]
    return photo, masked, references


@pytest.mark.parametrize("height,expected", [(250, 250), (150, 150), (512, MAX_TILE)])
def test_tiles_are_the_targets_height_up_to_the_cap_and_never_enlarged(height, expected):
    assert tile_height(height) == expected
    assert tile_height(height) >= min(height, 192)


def _row_extents(sheet: Image.Image) -> list[tuple[int, int]]:
    """(top, right edge) of every band of picture rows: pixels that are not white."""
    pixels = np.asarray(sheet.convert("L")) < 250
    rows = pixels[:, MARGIN:-MARGIN].any(axis=1)
    bands, start = [], None
    for y, busy in enumerate(rows):
        if busy and start is None:
            start = y
        elif not busy and start is not None:
            bands.append((start, y))
            start = None
    return [(top, int(np.flatnonzero(pixels[top:bottom].any(axis=0)).max())) for top, bottom in bands
            if bottom - top > 100]


def test_rows_of_samples_fill_the_width_and_the_result_sits_beside_baselines_and_gt():
    gt, masked, references = _scene(250)
    samples = [(f"#{i + 1} {i:03d} score {40 - i}", np.roll(gt, 3 * i, axis=1)) for i in range(12)]
    baselines = [("baseline telea\nPSNR 12.36", gt // 2), ("baseline geometric\nPSNR 15.86", gt[::-1])]
    sheet, extra = contact_sheets(references, masked, samples, gt, baselines=baselines)
    assert extra is None
    tile_w = gt.shape[1]
    width = sheet.width - 2 * MARGIN
    assert width == 4 * tile_w + 3 * GAP  # four target-sized tiles a row: the ground truth, result, 2 baselines
    bands = _row_extents(sheet)
    assert len(bands) == 1 + 1 + 3  # inputs; gt + result + baselines; 12 samples in rows of 4
    for _top, right in bands[1:]:
        assert right >= MARGIN + width - 2  # every row but the inputs (3 tiles) reaches the right edge


def test_long_correspondences_go_to_their_own_file(tmp_path):
    gt, masked, references = _scene(250)
    wide = np.concatenate([gt, references[0], references[1]], axis=1)  # as wide as a correspondence picture
    samples = [("#1 000 score 9", gt)]
    path = write_contact_sheets(tmp_path, references, masked, samples, gt, correspondences=[("c1", wide), ("c2", wide)])
    extra = tmp_path / CORRESPONDENCE_SHEET
    assert path.is_file() and extra.is_file()
    assert Image.open(extra).height >= 2 * 250 and Image.open(path).height < 4 * 300
    # one picture fits on the sheet: no separate file, and a stale one is removed
    write_contact_sheets(tmp_path, references, masked, samples, gt, correspondences=[("c1", gt)])
    assert not extra.exists()
