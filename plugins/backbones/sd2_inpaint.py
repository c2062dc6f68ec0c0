"""``sd2-inpaint``: Stable Diffusion 2 inpainting (``StableDiffusionInpaintPipeline``), the paper's backbone.

Weights from a local diffusers folder, a single checkpoint file (its configuration from ``config``: a
diffusers folder or cached model id, default the default model), or the local model cache (default
``sd2-community/stable-diffusion-2-inpainting``, where the weights have lived since Stability AI withdrew
``stabilityai/stable-diffusion-2-inpainting`` from the hub in November 2025; a cache filled under the old id
is found too); never downloaded."""

from __future__ import annotations

from functools import partial
from typing import Literal

from realfill.components import ComponentConfig
from realfill.diffusion import TORCH_DTYPES
from realfill.hookspecs import hookimpl
from realfill.weights import load_pipeline
from realfill_plugins.backbones.sd_family import DiffusersInpaintModel, SDBackbone, load_sd_single_file

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-inpainting"
#: the same weights under the id Stability AI published them (withdrawn from the hub, November 2025)
LEGACY_MODEL = "stabilityai/stable-diffusion-2-inpainting"
SINGLE_FILE = "512-inpainting-ema.safetensors"
HOW = (f"Download them once where there is network: `hf download {DEFAULT_MODEL}` fills the local model cache "
       f"(the same weights Stability AI published as {LEGACY_MODEL}, withdrawn from the hub in November 2025; a "
       f"cache filled under either id is found); or pass a diffusers model folder or the single checkpoint file "
       f"{SINGLE_FILE} (in {DEFAULT_MODEL}) with --set backbone.model=FILE")


class SD2Inpaint(SDBackbone):
    name = "sd2-inpaint"
    summary = "Stable Diffusion 2 inpainting (the paper's backbone), 512 px"
    needs = (f"weights: {DEFAULT_MODEL} (local folder, file, or model cache)",)
    native_resolution = 512
    cpu_estimate = ("a real-size SD2 training step at 512 px, batch 16, took about 280 s on this project's "
                    "2-core CPU in bf16 (docs/benchmarks.md): about 156 h for the paper's 2,000 steps")

    class Config(ComponentConfig):
        name: Literal["sd2-inpaint"] = "sd2-inpaint"
        model: str = DEFAULT_MODEL  # a diffusers folder, a .safetensors/.ckpt file, or a cached model id
        config: str | None = None  # a single file's configuration: a diffusers folder or cached model id
        variant: str | None = None  # e.g. "fp16" for the half-size files
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def load(self, device="cpu", dtype=None):
        from diffusers import StableDiffusionInpaintPipeline  # on use: the CLI's start-up imports this module

        c = self.config
        pipeline = load_pipeline(
            StableDiffusionInpaintPipeline, what="backbone sd2-inpaint", model=c.model, config=c.config,
            default_model=DEFAULT_MODEL, variant=c.variant, dtype=dtype or TORCH_DTYPES[c.dtype],
            extra={"safety_checker": None, "requires_safety_checker": False}, aliases=(LEGACY_MODEL,), how=HOW,
            single_file=partial(load_sd_single_file, aliases=(LEGACY_MODEL,) if c.config is None else ()),
        )
        return DiffusersInpaintModel(pipeline).to(device)


@hookimpl
def realfill_register_backbones(registry):
    registry.add(SD2Inpaint)
