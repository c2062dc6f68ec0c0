"""``flux-fill``: FLUX.1 Fill [dev] (``FluxFillPipeline``), a 12B rectified-flow transformer, bfloat16.

Weights from a local diffusers folder, a single transformer file (``flux1-fill-dev.safetensors`` as Black
Forest Labs ship it, or a diffusers-layout transformer file) with the rest (VAE, CLIP, T5, tokenizers,
configs) from ``config`` (a diffusers folder or cached model id, default the default model), or the local
model cache (default ``black-forest-labs/FLUX.1-Fill-dev``); never downloaded. The model is gated on the
hub: its licence must be accepted there before ``hf download`` fetches it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realfill.diffusion import TORCH_DTYPES
from realfill.errors import MissingWeightsError, UserError
from realfill.hookspecs import hookimpl
from realfill.weights import load_pipeline, single_file_config_folder
from realfill_plugins.backbones.flux_family import FlowMatchingSettings, FluxBackbone

DEFAULT_MODEL = "black-forest-labs/FLUX.1-Fill-dev"
GATED = (f"FLUX.1 Fill [dev] is gated on the hub: accept its licence at https://huggingface.co/{DEFAULT_MODEL} "
         f"and log in (`hf auth login`), then `hf download {DEFAULT_MODEL}` fills the local model cache where there "
         "is network; or copy a diffusers FluxFillPipeline folder here and pass --set backbone.model=PATH, or a "
         "single transformer file with --set backbone.model=FILE.safetensors --set backbone.config=FOLDER")


class FluxFill(FluxBackbone):
    name = "flux-fill"
    summary = "FLUX.1 Fill [dev] (rectified-flow transformer, CLIP + T5, guidance embedding), bf16, 1024 px"
    needs = (f"weights: {DEFAULT_MODEL} (gated; local folder, transformer file + config folder, or model cache)",)
    native_resolution = 1024
    cpu_estimate = ("FLUX.1 Fill is a 12B transformer: a CPU would take days per scene (a real-size SD2 step at "
                    "512 px, batch 16, 1.3B parameters, already took about 280 s on this project's 2-core CPU; "
                    "docs/benchmarks.md)")

    class Config(FlowMatchingSettings):
        name: Literal["flux-fill"] = "flux-fill"
        model: str = DEFAULT_MODEL  # a diffusers folder, a single transformer .safetensors, or a cached model id
        config: str | None = None  # a single transformer file's other parts: a diffusers folder or cached model id
        variant: str | None = None
        dtype: Literal["float32", "float16", "bfloat16"] = "bfloat16"
        max_sequence_length: int = Field(512, ge=1, le=512)  # T5 tokens (the pipeline's default)

    def load(self, device="cpu", dtype=None):
        from diffusers import FluxFillPipeline  # on use: the CLI's start-up imports this module without it

        c = self.config
        pipeline = load_pipeline(
            FluxFillPipeline, what="backbone flux-fill", model=c.model, config=c.config, default_model=DEFAULT_MODEL,
            variant=c.variant, dtype=dtype or TORCH_DTYPES[c.dtype], how=GATED, single_file=load_transformer_file,
        )
        # quantized layer by layer onto the device (a 24 GB GPU never holds the bf16 transformer whole)
        return self.quantize(self.wrap(pipeline), device).to(device)


def load_transformer_file(pipeline_class, *, what, path, config, dtype, extra):
    """A ``FluxFillPipeline`` whose transformer is the single file ``path`` (Black Forest Labs' layout or
    diffusers'; ``FluxTransformer2DModel.from_single_file`` converts the former) and whose other parts come
    from ``config``'s diffusers folder. Every transformer weight must come from the file."""
    from diffusers import FluxTransformer2DModel  # on use, as in load

    folder, place = single_file_config_folder(config)
    if folder is None:
        raise MissingWeightsError(what, [place], GATED,
                                  missing=f"the VAE, text encoders and configuration for the transformer file {path}")
    try:
        transformer = FluxTransformer2DModel.from_single_file(str(path), config=folder, subfolder="transformer",
                                                              torch_dtype=dtype, local_files_only=True)
    except Exception as exc:  # a broken or foreign file fails in many ways (safetensors, shapes, keys)
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"backbone.model: {path} could not be loaded as a FLUX transformer file with the "
                        f"configuration in {folder} ({type(exc).__name__}: {reason})") from None
    absent = [key for key, tensor in transformer.state_dict().items() if tensor.is_meta]
    if absent:
        raise UserError(f"backbone.model: {path} holds no transformer weights for {', '.join(absent[:3])}"
                        f"{' ...' if len(absent) > 3 else ''} ({len(absent)} missing): is it a FLUX.1 Fill "
                        "transformer?")
    try:
        return pipeline_class.from_pretrained(folder, transformer=transformer, torch_dtype=dtype,
                                              local_files_only=True, **extra)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"backbone.config: {folder} lacks the VAE, text encoders or tokenizers of "
                        f"{pipeline_class.__name__} ({reason})") from None


@hookimpl
def realfill_register_backbones(registry):
    registry.add(FluxFill)
