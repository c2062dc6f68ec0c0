"""What the training-free reference editors share (``flux-kontext``, ``flux2-klein``, ``qwen-edit-plus``,
``qwen-edit-inpaint`` and their tiny twins): their common settings, the choice of a reference, local-only
loading, and one edit composited back like a RealFill sample.

- **Which reference**, for a pipeline that takes one (``reference = "best-match"``, the default): the one
  with the most SIFT correspondences to the target's *known* pixels (Lowe ratio 0.75, as ``geometric``
  and ``multi-homography`` find them; ties go to the first). A reference that shares the most of the
  visible scene with the target is the likeliest to hold what the hole hides; the score never looks at
  the hole, so it is fair, and it costs a fraction of a second. ``"first"`` takes the first reference.
- **Weights** come from a local diffusers folder or the local model cache under the hub id, never
  downloaded (the backbones' loader, so the same "looked in: ..." message). Missing weights raise
  :class:`realfill.errors.MissingWeightsError`, which the comparison and ``realfill ablate`` report as
  "skipped" with that message instead of failing the run.
- **The result** is the edit resized back to the target's size and composited with the target's
  mask grown by ``mask_dilate`` and feathered over ``feather`` pixels (``realfill.sampling``'s blend),
  so outside that band the known pixels are the target's, bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from realfill.components import (GUIDANCE_MAX, STEPS_MAX, Baseline, BaselineResult, ComponentConfig, Pixels,
                                 Seed)
from realfill.device import resolve_device
from realfill.diffusion import TORCH_DTYPES
from realfill.sampling import blend_weights, composite
from realfill.weights import load_pipeline
from realfill_plugins.baselines.multi_homography import matches_to_target

#: what the editors are asked, unless ``prompt`` says otherwise (no pipeline documents a prompt for
#: reference-driven completion; this one names the task in the words their model cards' examples use)
COMPLETION_PROMPT = ("Fill in the missing region of the photo so that it shows the same scene as the reference "
                     "image, matching its content, lighting and perspective")


#: an editor's longest side: twice the 1024 px the FLUX and Qwen editors were trained at (4x their pixels)
EDIT_SIDE_MAX = 2048
#: a tiny editor's: four times its 64 px (its attention is over every token of target and reference)
TINY_EDIT_SIDE_MAX = 256


class EditorSettings(ComponentConfig):
    """Settings every reference editor has; each editor sets its pipeline's defaults."""

    model: str  # a diffusers folder or a hub id looked for in the local model cache
    dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
    # "auto": the first CUDA GPU where torch sees one, else the CPU; a device this machine lacks is refused
    # with the config (realfill.config.check_baseline_settings), before any work
    device: str = "auto"
    steps: int = Field(28, ge=1, le=STEPS_MAX)
    guidance: float = Field(3.5, ge=0, le=GUIDANCE_MAX)
    prompt: str = COMPLETION_PROMPT
    seed: Seed = 0
    #: the longer side to edit at (a multiple of 16 is taken); None: the pipeline's own sizing rule. At most
    #: EDIT_SIDE_MAX (100000 was killed for its memory)
    resolution: int | None = Field(None, ge=16, le=EDIT_SIDE_MAX)
    reference: Literal["best-match", "first"] = "best-match"
    mask_dilate: Pixels = 8  # pixels at the target's size, as sample.mask_dilate
    feather: Pixels = 8


def reference_order(scene) -> list[dict]:
    """Every reference with its SIFT correspondences to the target's known pixels, most first."""
    scored = []
    for index, reference in enumerate(scene.references):
        _, target_xy = matches_to_target(reference, scene)
        name = scene.reference_paths[index].name if index < len(scene.reference_paths) else str(index)
        scored.append({"index": index, "reference": name, "matches": int(len(target_xy))})
    return sorted(scored, key=lambda r: (-r["matches"], r["index"]))


def choose_reference(scene, how: str) -> tuple[int, dict]:
    """The reference a one-reference editor gets, and why (for the result's details)."""
    if how == "first":
        name = scene.reference_paths[0].name if scene.reference_paths else "0"
        return 0, {"reference": name, "chosen_by": "first"}
    order = reference_order(scene)
    best = order[0]
    return best["index"], {"reference": best["reference"], "chosen_by": "most SIFT matches to the known pixels",
                           "matches": {r["reference"]: r["matches"] for r in order}}


def load_local(pipeline_class, *, what: str, model: str, default_model: str, dtype, how: str):
    """``pipeline_class`` from a local diffusers folder or the local model cache, never downloaded; raises
    :class:`MissingWeightsError` naming where it looked and ``how`` to provide the weights."""
    return load_pipeline(pipeline_class, what=what, model=model, default_model=default_model, variant=None,
                         dtype=dtype, how=how)


def working_size(height: int, width: int, resolution: int, multiple: int = 16) -> tuple[int, int]:
    """The target's aspect ratio, longer side ``resolution``, each side a multiple of ``multiple``."""
    scale = resolution / max(height, width)
    return (max(multiple, int(round(height * scale / multiple)) * multiple),
            max(multiple, int(round(width * scale / multiple)) * multiple))


def pil(array: np.ndarray, size: tuple[int, int] | None = None):
    """A PIL image of ``array`` (HxWx3 uint8 or HxW bool), resized to ``size`` = (height, width) if given."""
    image = Image.fromarray(array.astype(np.uint8) * 255 if array.dtype == bool else array)
    if size is not None and (image.height, image.width) != size:
        resample = Image.Resampling.NEAREST if array.dtype == bool else Image.Resampling.BICUBIC
        image = image.resize((size[1], size[0]), resample)
    return image


def composite_edit(edited, scene, mask_dilate: int, feather: int) -> np.ndarray:
    """The edit (a PIL image, any size) at the target's size, pasted into the target with the feathered mask."""
    h, w = scene.mask.shape
    edited = edited.convert("RGB")
    if edited.size != (w, h):
        edited = edited.resize((w, h), Image.Resampling.BICUBIC)
    return composite(np.asarray(edited), scene.target, blend_weights(scene.mask, mask_dilate, feather))


class ReferenceEditor(Baseline):
    """An image baseline that runs one diffusers editing pipeline on the target, its mask and references.

    Subclasses set ``pipeline_class_name``, ``default_model``, ``how`` (where to get the weights) and
    implement ``call_arguments``; a tiny twin overrides ``build_pipeline``."""

    kind = "image"
    pipeline_class_name: ClassVar[str] = ""
    default_model: ClassVar[str] = ""
    how: ClassVar[str] = ""
    #: set by a tiny twin: True where the pipeline is built here from configs (random weights)
    tiny: ClassVar[bool] = False

    def build_pipeline(self, dtype):
        import diffusers  # start-up time: diffusers takes seconds to import; only a run needs it

        c = self.config
        return load_local(getattr(diffusers, self.pipeline_class_name), what=f"baseline {self.name}", model=c.model,
                          default_model=self.default_model, dtype=dtype, how=self.how)

    def pipeline(self):
        """The pipeline on its device, loaded once per process for the same settings (an ablation over many
        scenes loads a 12B model once)."""
        c = self.config
        key = (type(self).__name__, c.model, c.dtype, c.device, getattr(c, "weights_seed", None))
        if _LOADED.get("key") != key:
            _LOADED.clear()  # one editor in memory at a time
            pipeline = self.build_pipeline(TORCH_DTYPES[c.dtype]).to(resolve_device(c.device))
            pipeline.set_progress_bar_config(disable=True)
            _LOADED.update(key=key, pipeline=pipeline)
        return _LOADED["pipeline"]

    def call_arguments(self, scene, size: tuple[int, int] | None) -> tuple[dict[str, Any], dict]:
        """The pipeline's keyword arguments for ``scene`` at ``size`` (None: the pipeline's own sizing),
        and details for the result (which reference, and why)."""
        raise NotImplementedError

    def complete(self, scene) -> BaselineResult:
        c = self.config
        pipeline = self.pipeline()
        size = None if c.resolution is None else working_size(*scene.mask.shape, c.resolution)
        arguments, details = self.call_arguments(scene, size)
        generator = torch.Generator("cpu").manual_seed(c.seed)
        with torch.inference_mode(), quiet_libraries():
            edited = pipeline(**arguments, generator=generator, output_type="pil").images[0]
        image = composite_edit(edited, scene, c.mask_dilate, c.feather)
        details = {"pipeline": self.pipeline_class_name, "model": "tiny (random weights)" if self.tiny else c.model,
                   "steps": c.steps, "guidance": c.guidance, "prompt": c.prompt, "seed": c.seed,
                   "edited_size": [edited.height, edited.width], **details}
        return BaselineResult(image, details)


_LOADED: dict[str, Any] = {}


@contextmanager
def quiet_libraries():
    """diffusers' and transformers' notices (a resized canvas, a truncated prompt) off during an edit: they
    would break the comparison's table and the ablation's live display; ``details`` say what was used."""
    # start-up time: diffusers and transformers take seconds to import; only an edit needs them
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    before = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(before[0])
        transformers_logging.set_verbosity(before[1])
