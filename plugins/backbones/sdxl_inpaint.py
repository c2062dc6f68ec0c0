"""``sdxl-inpaint``: SDXL inpainting (``StableDiffusionXLInpaintPipeline``), both text encoders, pooled
embeddings and time ids in training as in sampling. Weights from a local diffusers folder, a single
checkpoint file (its configuration from ``config``: a diffusers folder or cached model id, default the
default model), or the local model cache (default ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``)."""

from __future__ import annotations

from typing import Literal

from realfill.components import ComponentConfig
from realfill.diffusion import TORCH_DTYPES
from realfill.hookspecs import hookimpl
from realfill.weights import load_pipeline
from realfill_plugins.backbones.sd_family import SDBackbone, SDXLInpaintModel, load_sd_single_file

DEFAULT_MODEL = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"


class SDXLInpaint(SDBackbone):
    name = "sdxl-inpaint"
    summary = "SDXL 1.0 inpainting (two text encoders, pooled embeds, time ids), 1024 px"
    needs = ("weights: diffusers/stable-diffusion-xl-1.0-inpainting-0.1 (local folder, file, or model cache)",)
    native_resolution = 1024
    cpu_estimate = ("a real-size SDXL training step at 512 px, batch 16, took about 384 s on this project's "
                    "2-core CPU in bf16 (docs/benchmarks.md), and 1024 px costs about 4x that: weeks for 2,000 steps")

    class Config(ComponentConfig):
        name: Literal["sdxl-inpaint"] = "sdxl-inpaint"
        model: str = DEFAULT_MODEL
        config: str | None = None  # a single file's configuration: a diffusers folder or cached model id
        variant: str | None = None
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def load(self, device="cpu", dtype=None):
        from diffusers import StableDiffusionXLInpaintPipeline  # on use: the CLI's start-up imports this module

        c = self.config
        pipeline = load_pipeline(
            StableDiffusionXLInpaintPipeline, what="backbone sdxl-inpaint", model=c.model, config=c.config,
            default_model=DEFAULT_MODEL, variant=c.variant, dtype=dtype or TORCH_DTYPES[c.dtype],
            single_file=load_sd_single_file,
        )
        return SDXLInpaintModel(pipeline).to(device)


@hookimpl
def realfill_register_backbones(registry):
    registry.add(SDXLInpaint)
