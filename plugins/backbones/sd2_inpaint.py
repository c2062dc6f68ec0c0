"""``sd2-inpaint``: Stable Diffusion 2 inpainting (``StableDiffusionInpaintPipeline``), the paper's backbone.

Weights from a local diffusers folder, a single checkpoint file (its configuration from ``config``: a
diffusers folder or cached model id, default the default model), or the local model cache (default
``stabilityai/stable-diffusion-2-inpainting``); never downloaded."""

from __future__ import annotations

from typing import Literal

from realfill.components import Backbone, ComponentConfig
from realfill.diffusion import TORCH_DTYPES, DiffusersInpaintModel, load_pipeline
from realfill.hookspecs import hookimpl

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-inpainting"


class SD2Inpaint(Backbone):
    name = "sd2-inpaint"
    summary = "Stable Diffusion 2 inpainting (the paper's backbone), 512 px"
    needs = ("weights: stabilityai/stable-diffusion-2-inpainting (local folder, file, or model cache)",)

    class Config(ComponentConfig):
        name: Literal["sd2-inpaint"] = "sd2-inpaint"
        model: str = DEFAULT_MODEL  # a diffusers folder, a .safetensors/.ckpt file, or a cached model id
        config: str | None = None  # a single file's configuration: a diffusers folder or cached model id
        variant: str | None = None  # e.g. "fp16" for the half-size files
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def load(self, device="cpu", dtype=None):
        from diffusers import StableDiffusionInpaintPipeline

        c = self.config
        pipeline = load_pipeline(
            StableDiffusionInpaintPipeline, what="backbone sd2-inpaint", model=c.model, config=c.config,
            default_model=DEFAULT_MODEL, variant=c.variant, dtype=dtype or TORCH_DTYPES[c.dtype],
            extra={"safety_checker": None, "requires_safety_checker": False},
        )
        return DiffusersInpaintModel(pipeline, native_resolution=512).to(device)


@hookimpl
def realfill_register_backbones(registry):
    registry.add(SD2Inpaint)
