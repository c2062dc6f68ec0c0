"""``in-context``: the references and the target side by side on one canvas, the target's hole inpainted by
the run's own backbone *without* fine-tuning (LeftRefill's layout, CVPR'24; in-context LoRA's panels), the
target's panel cropped back, resized to the target's size and composited like a RealFill sample. Its
samples are ranked by the run's ranker, as RealFill's are. It needs no weights beyond the run's.

The layout and its resolution rule (:func:`canvas_layout`):

- one row of panels at one height: the references in the scene's order on the left, the target rightmost;
  each panel keeps its aspect ratio, its width rounded to the backbone's size step (``size_multiple``:
  64 for SD2/SDXL, 16 for FLUX), so the canvas's sides are multiples of it and the target's panel starts
  on a latent cell;
- the height is the backbone's native side (512 SD2, 1024 SDXL and FLUX, 64 the tiny twins), lowered in
  size steps until the canvas holds at most ``canvas_area`` native squares (default 2: LeftRefill's
  512x1024 canvas for one square reference and a square target); so one reference keeps the native
  scale, and with 2-5 references the panels shrink (by about sqrt(2 / panels)) instead of the canvas
  growing past what the model was trained at;
- at most ``max_references`` references (default 5, all that a scene has).

The canvas's mask is the target's, resized into its panel (a pixel touching the hole stays in it); the
references' panels are all known. Sampling uses the run's ``sample.*`` settings (scheduler, steps,
guidance, prompt, number of samples and batch, dilation and feather) and seeds ``seed + i``, as RealFill's
samples do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from realfill.atomic import atomic_dir
from realfill.components import Baseline, BaselineResult, ComponentConfig
from realfill.hookspecs import hookimpl
from realfill.sampling import resize_image, resize_mask, blend_weights, paste_back
from realfill.seed_selection import rank_candidates


def canvas_layout(target_size: tuple[int, int], reference_sizes: list[tuple[int, int]], side: int, multiple: int,
                  area: float = 2.0) -> tuple[int, list[int]]:
    """The canvas's height and its panels' widths (references first, the target last) for images of
    ``(height, width)`` sizes: see the module docstring. Every value is a multiple of ``multiple``."""
    shapes = [*reference_sizes, target_size]

    def widths(height: int) -> list[int]:
        return [max(multiple, int(round(height * w / h / multiple)) * multiple) for h, w in shapes]

    height = max(multiple, side // multiple * multiple)
    while height > multiple and height * sum(widths(height)) > area * side * side:
        height -= multiple
    return height, widths(height)


class InContextBaseline(Baseline):
    name = "in-context"
    summary = ("the references left of the target on one canvas, the hole inpainted by the run's untuned backbone "
               "(LeftRefill's layout), samples ranked by the run's ranker")
    kind = "model"
    needs = ("the run's backbone (its weights; nothing more)",)

    class Config(ComponentConfig):
        name: Literal["in-context"] = "in-context"
        #: the canvas's area in native squares (the backbone's native side squared)
        #: (at most 16: a canvas of 4x the native side, as an explicit sample.resolution at most)
        canvas_area: float = Field(2.0, gt=0, le=16)
        #: references on the canvas (the scene's first ones; at most 1000, as max_references)
        max_references: int = Field(5, ge=1, le=1000)
        #: None: the run's sampling prompt (as ``backbone-untuned`` samples with)
        prompt: str | None = None

    def complete(self, scene, context) -> BaselineResult:
        config, c = context.config, self.config
        s = config.sample
        model = context.model()
        references = scene.references[: c.max_references]
        side = context.plugins.registry("backbone").get(config.backbone.name).native_resolution
        height, widths = canvas_layout(scene.target.shape[:2], [r.shape[:2] for r in references], side,
                                       int(model.size_multiple), c.canvas_area)
        canvas = np.zeros((height, sum(widths), 3), np.uint8)
        canvas_mask = np.zeros((height, sum(widths)), bool)
        x = 0
        for image, width in zip([*references, scene.target], widths, strict=True):
            canvas[:, x:x + width] = resize_image(image, height, width)
            x += width
        left = x - widths[-1]
        canvas_mask[:, left:] = resize_mask(scene.mask, height, widths[-1])
        canvas[canvas_mask] = 0  # nothing of the hole reaches the model
        prompt = c.prompt if c.prompt is not None else (s.prompt if s.prompt is not None else config.train.prompt)
        sampler = model.make_scheduler(s.scheduler)
        weights = blend_weights(scene.mask, s.mask_dilate, s.feather)
        image = torch.from_numpy(canvas).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [1, 3, H, W] in [-1, 1]
        mask = torch.from_numpy(canvas_mask).float()[None, None]  # [1, 1, H, W], 1 = fill
        samples: list[np.ndarray] = []
        for start in range(0, s.num_samples, s.batch_size):
            count = min(s.batch_size, s.num_samples - start)
            generators = [torch.Generator("cpu").manual_seed(config.seed + start + i) for i in range(count)]
            with torch.no_grad():
                out = model.generate(image, mask, prompt, generators=generators, scheduler=sampler, steps=s.steps,
                                     guidance_scale=s.guidance_scale)
            samples.extend(paste_back(out[..., left:], scene.target, weights))
        out_dir = Path(context.out_dir)
        with atomic_dir(out_dir / "samples") as building:
            for i, sample in enumerate(samples):
                Image.fromarray(sample).save(building / f"{i:03d}.png")
        names = [f"{i:03d}.png" for i in range(len(samples))]
        ranking = rank_candidates(context.ranker(), scene, samples, names, run_dir=out_dir, keep=config.select.keep,
                                  keep_fraction=config.select.keep_fraction)
        best = names.index(ranking[0]["file"])
        details = {"backbone": config.backbone.name, "canvas": [height, sum(widths)], "panel_widths": widths,
                   "references": len(references), "prompt": prompt, "seeds": [config.seed, config.seed + len(samples) - 1],
                   "samples": len(samples), "ranker": config.ranker.name, "best": ranking[0]["file"]}
        return BaselineResult(samples[best], details)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(InContextBaseline)
