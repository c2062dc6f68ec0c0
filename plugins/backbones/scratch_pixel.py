"""``scratch-pixel``: a small pixel-space inpainting diffusion model, random init, trained from scratch on
the scene. No pre-trained prior and no weights to download: the backbone that serves on a CPU.

A ``diffusers.UNet2DModel`` whose input is ``noisy RGB (3) + mask (1) + masked RGB (3)`` and whose output
is what ``prediction_type`` says; ``sample`` (the clean image) is the default because, trained from scratch
on one scene for a few minutes, predicting the noise leaves the hole full of coloured noise
(docs/cpu_backbone.md). Its size, prediction target and noise schedule are all in its config.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator

from realfill.attention import attention_processor
from realfill.components import Backbone, ComponentConfig, Seed
from realfill.diffusion import InpaintModel
from realfill.hookspecs import hookimpl

# diffusers and transformers are imported inside the functions that use them: the CLI's start-up (`realfill
# plugins`, `realfill config`) imports every plugin module, and diffusers alone adds seconds to it.

DISCLAIMER = (
    "scratch-pixel: a small pixel-space diffusion model trained from scratch on this scene only, at low "
    "resolution; it is NOT the paper's pre-trained diffusion prior (SD2 inpainting), so expect a blurry, "
    "low-detail fill"
)


class ScratchPixelConfig(ComponentConfig):
    name: Literal["scratch-pixel"] = "scratch-pixel"
    seed: Seed = 0  # the random initial weights' seed
    # one entry per level, at most 8 levels: each halves the side, and a side must be a multiple of
    # 2 ** (levels - 1) (8 levels: of 128 px, above most training sides here)
    block_out_channels: tuple[Annotated[int, Field(ge=1, le=4096)], ...] = Field((32, 64, 64), max_length=8)
    # at most 16 resnet layers per level (SD's UNet has 2): 100000 built a model no memory holds
    layers_per_block: int = Field(1, ge=1, le=16)
    # self-attention in this many of the lowest-resolution levels (at most the levels; 8 the most levels)
    attention_levels: int = Field(0, ge=0, le=8)
    norm_num_groups: int = Field(8, ge=1, le=4096)  # at most the most channels a level has
    prediction_type: Literal["sample", "epsilon", "v_prediction"] = "sample"
    # at most 100000 (100x SD's 1000): the schedule's tables are this long
    num_train_timesteps: int = Field(1000, ge=2, le=100_000)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    channels_last: bool = False

    @model_validator(mode="after")
    def _consistent(self):
        if not self.block_out_channels:
            raise ValueError("block_out_channels: give at least one level, e.g. [32, 64, 64]")
        if self.attention_levels > len(self.block_out_channels):
            raise ValueError(f"attention_levels ({self.attention_levels}) is more than the "
                             f"{len(self.block_out_channels)} levels of block_out_channels")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not multiples of norm_num_groups ({self.norm_num_groups})")
        return self


class PixelInpaintModel(InpaintModel):
    """An :class:`InpaintModel` in RGB pixel space: encoding and decoding are the identity."""

    latent_factor = 1
    latent_channels = 3
    #: a diffusers UNet2DModel: LoRA files key its weights as the SD family's
    denoiser_name = "unet"

    def __init__(self, unet, noise_scheduler, *, channels_last: bool = False):
        self.denoiser = unet
        self.text_encoders = []
        self.noise_scheduler = noise_scheduler
        self.size_multiple = 2 ** (len(unet.config.block_out_channels) - 1)
        self.channels_last = channels_last
        self.device = unet.device
        self.dtype = unet.dtype
        if channels_last:
            unet.to(memory_format=torch.channels_last)

    def encode_images(self, images, generator=None):
        return images.to(self.device, self.dtype)

    def decode_latents(self, latents):
        return latents

    def denoise(self, noisy, timesteps, mask, masked_latents, cond):
        x = torch.cat([noisy, mask.to(noisy.dtype), masked_latents.to(noisy.dtype)], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.denoiser(x, timesteps, return_dict=False)[0]

    def set_attention(self, kind: str) -> None:
        from diffusers.models.attention_processor import Attention

        for module in self.denoiser.modules():
            if isinstance(module, Attention):
                module.set_processor(attention_processor(kind))


def build_unet(config: ScratchPixelConfig, sample_size: int = 64):
    """The denoiser, its weights drawn from ``config.seed`` (the global RNG is left untouched)."""
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    down = tuple("AttnDownBlock2D" if i >= levels - config.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple(reversed([block.replace("Down", "Up") for block in down]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return UNet2DModel(
            sample_size=sample_size, in_channels=7, out_channels=3, block_out_channels=config.block_out_channels,
            layers_per_block=config.layers_per_block, down_block_types=down, up_block_types=up,
            norm_num_groups=config.norm_num_groups, attention_head_dim=8, add_attention=config.attention_levels > 0,
        )


def build_scheduler(config: ScratchPixelConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=True, clip_sample_range=1.0)


class ScratchPixel(Backbone):
    name = "scratch-pixel"
    summary = "pixel-space inpainting UNet, random init, trained from scratch on the scene (CPU, low resolution)"
    native_resolution = 64  # no published weights: the UNet's default sample size (the cpu preset sets 48)
    needs = ()
    disclaimer = DISCLAIMER
    diffusers_pipeline = False  # a bare UNet: only the full adapter trains it
    Config = ScratchPixelConfig

    def load(self, device="cpu", dtype=None):
        model = PixelInpaintModel(build_unet(self.config), build_scheduler(self.config),
                                  channels_last=self.config.channels_last)
        return model.to(device, dtype)


@hookimpl
def realfill_register_backbones(registry):
    registry.add(ScratchPixel)
