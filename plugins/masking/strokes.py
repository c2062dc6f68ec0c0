"""``strokes``: free-form brush strokes (DeepFill v2 / LaMa "irregular" masks), for ablations against the
paper's boxes: per item 1-``max_strokes`` random walks of ``min_vertices``-``max_vertices`` segments,
drawn with round brushes of ``min_width``-``max_width`` (fractions of the image side)."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch
from pydantic import Field

from realfill.components import ComponentConfig, MaskingStrategy
from realfill.hookspecs import hookimpl


class Strokes(MaskingStrategy):
    name = "strokes"
    summary = "free-form brush strokes (random walks with thick round brushes)"

    class Config(ComponentConfig):
        name: Literal["strokes"] = "strokes"
        # at most 1000 strokes and vertices a mask (each is drawn in Python; the defaults are 5 and 12)
        max_strokes: int = Field(5, ge=1, le=1000)
        min_vertices: int = Field(4, ge=1, le=1000)
        max_vertices: int = Field(12, ge=1, le=1000)
        min_width: float = Field(0.03, gt=0, le=1)
        max_width: float = Field(0.12, gt=0, le=1)
        max_step: float = Field(0.2, gt=0, le=1)  # segment length, fraction of the image side
        invert_prob: float = Field(0.0, ge=0, le=1)

    def make_masks(self, batch_size, height, width, *, is_target, target_masks, generator):
        c = self.config

        def rand() -> float:
            return float(torch.rand((), generator=generator))

        side = min(height, width)
        masks = np.zeros((batch_size, height, width), np.uint8)
        for b in range(batch_size):
            for _ in range(1 + int(rand() * c.max_strokes) % c.max_strokes):
                x, y = rand() * width, rand() * height
                brush = max(1, int(round((c.min_width + rand() * (c.max_width - c.min_width)) * side)))
                vertices = c.min_vertices + int(rand() * (c.max_vertices - c.min_vertices + 1))
                for _ in range(vertices):
                    angle = rand() * 2 * math.pi
                    length = (0.3 + 0.7 * rand()) * c.max_step * side
                    nx = min(max(x + length * math.cos(angle), 0), width - 1)
                    ny = min(max(y + length * math.sin(angle), 0), height - 1)
                    cv2.line(masks[b], (int(x), int(y)), (int(nx), int(ny)), 1, brush)
                    cv2.circle(masks[b], (int(nx), int(ny)), brush // 2, 1, -1)
                    x, y = nx, ny
        out = torch.from_numpy(masks).float()[:, None]
        invert = torch.rand(batch_size, generator=generator) < c.invert_prob
        out[invert] = 1.0 - out[invert]
        return out


@hookimpl
def realfill_register_masking(registry):
    registry.add(Strokes)
