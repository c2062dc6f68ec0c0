"""Validation images while training (``train.validation_steps``; 0 = off), as diffusers' training scripts
do with ``--validation_steps``: every N steps a few completions of the target with the current adapter,
always the same seeds (``seed``, ``seed + 1``, ...) so that the strips of two steps differ only by what
training changed. One strip per step, ``validation/step-NNNNN.png``, written atomically; a resumed run
finds the strips it already wrote and does not redo them.

The cost: ``train.validation_images`` samples of ``train.validation_sample_steps`` sampler steps every
``train.validation_steps`` steps (docs/tracking.md has the measured share of the training time).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from realfill import sampling
from realfill.atomic import save_image

VALIDATION_DIR = "validation"
#: a strip's pictures are scaled to this height (a 4-image strip of a 1024 px target stays ~1 MB)
STRIP_HEIGHT = 256
STRIP_GAP = 4
_STEP = re.compile(r"^step-(\d+)\.png$")


def strip_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / VALIDATION_DIR / f"step-{step:05d}.png"


def is_validation_step(train, step: int) -> bool:
    return bool(train.validation_steps) and step % train.validation_steps == 0


def validation_strips(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every strip in ``run_dir/validation/``, by step."""
    folder = Path(run_dir) / VALIDATION_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP.match(p.name))]
    return sorted(found)


def latest_validation(run_dir: Path) -> tuple[int, Path] | None:
    strips = validation_strips(run_dir)
    return strips[-1] if strips else None


def sample_validation(model, scene, config, attention=None) -> list[np.ndarray]:
    """``train.validation_images`` completions of the scene's target, seeds ``config.seed + i``, with the
    run's sampler (``train.validation_sample_steps`` steps, else ``sample.steps``), at the target's size."""
    s, t = config.sample, config.train
    count = t.validation_images
    return sampling.sample_completions(
        model, scene.target, scene.mask, prompt=s.prompt if s.prompt is not None else t.prompt,
        resolution=s.resolution or sampling.training_scale_resolution(*scene.mask.shape, t.resolution),
        scheduler=s.scheduler, steps=t.validation_sample_steps or s.steps, guidance_scale=s.guidance_scale,
        num_samples=count, batch_size=count, mask_dilate=s.mask_dilate, feather=s.feather, seed=config.seed,
        attention=attention,
    )


def make_strip(images: list[np.ndarray], height: int = STRIP_HEIGHT) -> np.ndarray:
    """The images side by side, each scaled to ``height`` (never up), on white with a small gap."""
    height = min(height, *(image.shape[0] for image in images))
    scaled = []
    for image in images:
        width = max(1, round(image.shape[1] * height / image.shape[0]))
        picture = Image.fromarray(image)
        if picture.size != (width, height):
            picture = picture.resize((width, height), Image.Resampling.LANCZOS)
        scaled.append(np.asarray(picture))
    total = sum(image.shape[1] for image in scaled) + STRIP_GAP * (len(scaled) - 1)
    strip = np.full((height, total, 3), 255, np.uint8)
    x = 0
    for image in scaled:
        strip[:, x:x + image.shape[1]] = image
        x += image.shape[1] + STRIP_GAP
    return strip


def write_strip(run_dir: Path, step: int, images: list[np.ndarray]) -> Path:
    path = strip_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(path, make_strip(images))


__all__ = ["VALIDATION_DIR", "is_validation_step", "latest_validation", "make_strip", "sample_validation",
           "strip_path", "validation_strips", "write_strip"]
