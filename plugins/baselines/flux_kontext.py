"""``flux-kontext``: FLUX.1 Kontext [dev] inpainting (diffusers ``FluxKontextInpaintPipeline``), training-free,
with one reference as ``image_reference``; ``tiny-flux-kontext``: the same pipeline, tiny, random weights.

The pipeline denoises the target's latents with the reference's latents beside them in the transformer's
sequence (Kontext's in-context conditioning) and pastes the known latents back at every step. It takes one
reference: the one with the most SIFT correspondences to the target's known pixels (``reference =
"best-match"``; see ``reference_editing``), since a reference that shares most of the visible scene is the
likeliest to hold what the hole hides.

Defaults, from the installed pipeline's ``__call__``: 28 steps, embedded guidance 3.5, strength 1.0 (the
masked region starts from pure noise; the docstring's reference example uses 1.0 too), T5 512 tokens, and
its own sizing (``resolution`` unset: the Kontext resolution nearest the target's aspect ratio, about 1 MP).
Weights: ``black-forest-labs/FLUX.1-Kontext-dev`` (the docstring's model), bfloat16, from a local diffusers
folder (``model = PATH``) or the local model cache; never downloaded. The model is gated on the hub under the
FLUX.1 [dev] Non-Commercial License: accept it there before ``hf download``.

``tiny-flux-kontext`` builds the same pipeline offline from configs (``tiny-flux``'s parts with Kontext's
64-channel transformer input; CLIP and T5 tokenizers built in memory), seeded by ``weights_seed``, and edits
at 64 px on the CPU in about a second: the mechanics are real, the images are noise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realfill.components import GUIDANCE_MAX, STEPS_MAX, Seed
from realfill.hookspecs import hookimpl
from realfill_plugins.backbones.tiny import in_dtype
from realfill_plugins.backbones.tiny_flux import tiny_flux_parts
from realfill_plugins.baselines.reference_editing import (TINY_EDIT_SIDE_MAX, EditorSettings, ReferenceEditor,
                                                          choose_reference, pil,
                                                          working_size)

DEFAULT_MODEL = "black-forest-labs/FLUX.1-Kontext-dev"
GATED = (f"FLUX.1 Kontext [dev] is gated on the hub (FLUX.1 [dev] Non-Commercial License): accept it at "
         f"https://huggingface.co/{DEFAULT_MODEL} and log in (`hf auth login`), then `hf download {DEFAULT_MODEL}` "
         "fills the local model cache where there is network; or copy a diffusers FluxKontextInpaintPipeline "
         "folder here and pass it with --set baselines.flux-kontext.model=PATH")


class FluxKontext(ReferenceEditor):
    name = "flux-kontext"
    summary = ("FLUX.1 Kontext [dev] inpainting (FluxKontextInpaintPipeline), training-free, the best-matching "
               "reference as image_reference; 28 steps, guidance 3.5")
    needs = (f"weights: {DEFAULT_MODEL} (gated; local folder or model cache)",)
    pipeline_class_name = "FluxKontextInpaintPipeline"
    default_model = DEFAULT_MODEL
    how = GATED

    class Config(EditorSettings):
        name: Literal["flux-kontext"] = "flux-kontext"
        model: str = DEFAULT_MODEL
        steps: int = Field(28, ge=1, le=STEPS_MAX)
        guidance: float = Field(3.5, ge=0, le=GUIDANCE_MAX)  # embedded guidance (guidance-distilled)
        # at least 1e-3: diffusers keeps steps - int(steps * (1 - strength)) steps, none for a strength lost in
        # the rounding (5e-324 ended the fill with a traceback)
        strength: float = Field(1.0, ge=1e-3, le=1)
        max_sequence_length: int = Field(512, ge=1, le=512)

    def call_arguments(self, scene, size):
        c = self.config
        index, details = choose_reference(scene, c.reference)
        reference = scene.references[index]
        arguments = dict(prompt=c.prompt, num_inference_steps=c.steps, guidance_scale=c.guidance,
                         strength=c.strength, max_sequence_length=c.max_sequence_length)
        if size is None:  # the pipeline's own sizing: the preferred Kontext resolution nearest the aspect ratio
            arguments.update(image=pil(scene.target), mask_image=pil(scene.mask), image_reference=pil(reference))
        else:
            arguments.update(image=pil(scene.target, size), mask_image=pil(scene.mask, size),
                             image_reference=pil(reference, working_size(*reference.shape[:2], max(size))),
                             max_area=size[0] * size[1], _auto_resize=False)
        return arguments, details


def build_tiny_flux_kontext(seed: int = 0):
    """A FluxKontextInpaintPipeline with ``tiny-flux``'s parts, but Kontext's 64-channel transformer input
    (noisy latents only: the reference joins the sequence), weights drawn from ``seed``."""
    # start-up time: diffusers takes seconds to import; only a tiny twin's build needs it
    from diffusers import FluxKontextInpaintPipeline

    return FluxKontextInpaintPipeline(**tiny_flux_parts(seed, in_channels=4 * 16))


class TinyFluxKontext(FluxKontext):
    name = "tiny-flux-kontext"
    summary = "flux-kontext's pipeline, tiny, random weights built offline (tests and CPU smoke runs; noise)"
    needs = ()
    tiny = True

    class Config(FluxKontext.Config):
        name: Literal["tiny-flux-kontext"] = "tiny-flux-kontext"
        model: Literal["tiny"] = "tiny"
        weights_seed: Seed = 0
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"
        steps: int = Field(4, ge=1, le=STEPS_MAX)
        resolution: int | None = Field(64, ge=16, le=TINY_EDIT_SIDE_MAX)
        max_sequence_length: int = Field(32, ge=1, le=32)  # the tiny T5's

    def build_pipeline(self, dtype):
        return in_dtype(build_tiny_flux_kontext(self.config.weights_seed), dtype)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(FluxKontext)
    registry.add(TinyFluxKontext)
