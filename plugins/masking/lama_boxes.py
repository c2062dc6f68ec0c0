"""``lama-boxes``: the paper's training masks, the union of 1-30 random rectangles, each side 3%-25% of the
image, inverted with probability 0.5 (LaMa-style; RealFill Sec. 4). Every item, reference or target, gets
a fresh mask; the target's unknown region is excluded by the loss, not by the mask."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from realfill.components import ComponentConfig, MaskingStrategy
from realfill.hookspecs import hookimpl


class BoxesConfig(ComponentConfig):
    # at most 1000 boxes a mask (LaMa's default 30; each box is drawn in Python: 10**12 never ended)
    min_boxes: int = Field(1, ge=1, le=1000)
    max_boxes: int = Field(30, ge=1, le=1000)
    min_side: float = Field(0.03, gt=0, le=1)  # fraction of the image side
    max_side: float = Field(0.25, gt=0, le=1)
    invert_prob: float = Field(0.5, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_boxes > self.max_boxes:
            raise ValueError(f"min_boxes ({self.min_boxes}) is more than max_boxes ({self.max_boxes})")
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) is more than max_side ({self.max_side})")
        return self


def draw_boxes(config: BoxesConfig, batch_size: int, generator: torch.Generator
               ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The generator's draws, item by item: each item's box count, then its boxes' uniform draws
    ``[4, count]`` (heights, widths, tops, lefts); then which items are inverted ``[B]``."""
    draws = []
    for _ in range(batch_size):
        n = int(torch.randint(config.min_boxes, config.max_boxes + 1, (1,), generator=generator))
        draws.append(torch.rand(4, n, generator=generator))
    return draws, torch.rand(batch_size, generator=generator) < config.invert_prob


def box_geometry(config: BoxesConfig, draws: torch.Tensor, height: int, width: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes' heights, widths, tops and lefts in pixels (whole numbers, as floats) from their uniform draws
    ``[4, boxes]``: each side ``min_side``-``max_side`` of the image's, placed uniformly inside it.
    Elementwise, so one item's boxes or a whole batch's give the same numbers."""
    low, high = config.min_side, config.max_side
    hs = ((low + (high - low) * draws[0]) * height).round().clamp(min=1)
    ws = ((low + (high - low) * draws[1]) * width).round().clamp(min=1)
    return hs, ws, (draws[2] * (height - hs + 1)).floor(), (draws[3] * (width - ws + 1)).floor()


def box_masks(config: BoxesConfig, batch_size: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``[B, 1, H, W]`` float 0/1: per item, the union of random boxes, inverted with ``invert_prob``.

    The generator is read item by item (:func:`draw_boxes`), as a per-item loop would; the boxes are then
    drawn for the whole batch at once: one batched matmul instead of a loop over items (it runs every
    training step; docs/benchmarks.md)."""
    draws, invert = draw_boxes(config, batch_size, generator)
    counts = [d.shape[1] for d in draws]
    hs, ws, y0, x0 = box_geometry(config, torch.cat(draws, dim=1), height, width)
    ys, xs = torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32)
    rows = ((ys >= y0[:, None]) & (ys < (y0 + hs)[:, None])).float()  # [boxes, H]: the rows each box covers
    cols = ((xs >= x0[:, None]) & (xs < (x0 + ws)[:, None])).float()  # [boxes, W]
    # each item's boxes side by side ([B, most boxes, H or W], empty slots zero): one batched matmul
    # counts, for every pixel, the boxes covering it
    sizes = torch.tensor(counts)
    item = torch.repeat_interleave(torch.arange(batch_size), sizes)
    slot = torch.arange(len(item)) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
    item_rows = torch.zeros(batch_size, max(counts), height)
    item_cols = torch.zeros(batch_size, max(counts), width)
    item_rows[item, slot], item_cols[item, slot] = rows, cols
    masks = (torch.bmm(item_rows.transpose(1, 2), item_cols) > 0).float()[:, None]
    masks[invert] = 1.0 - masks[invert]
    return masks


class LamaBoxes(MaskingStrategy):
    name = "lama-boxes"
    summary = "the paper's masks: union of 1-30 random boxes (sides 3-25%), inverted with p=0.5"

    class Config(BoxesConfig):
        name: Literal["lama-boxes"] = "lama-boxes"

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        return box_masks(self.config, batch_size, height, width, generator)


@hookimpl
def realfill_register_masking(registry):
    registry.add(LamaBoxes)
