"""``tiny-sd2`` and ``tiny-sdxl``: the SD2 / SDXL inpainting architectures, tiny and with random weights.

Same families as the real backbones (a VAE with 8x downsampling, a 9-channel UNet with cross-attention to
the text encoder(s); for SDXL two text encoders, pooled embeddings and added time ids), built offline from
configs with a seeded generator, so the same seed gives the same weights. The tokenizer is a byte-level
CLIP BPE with a vocabulary written here (no merges), since ``hf-internal-testing`` models cannot be
downloaded. For CPU smoke runs and tests: the mechanics are real, the images are noise.
"""

from __future__ import annotations

from typing import Literal

import torch

from realfill.components import ComponentConfig, Seed
from realfill.diffusion import TORCH_DTYPES
from realfill.hookspecs import hookimpl
from realfill_plugins.backbones.sd_family import DiffusersInpaintModel, SDBackbone, SDXLInpaintModel

# diffusers and transformers are imported inside the functions that use them: the CLI's start-up (`realfill
# plugins`, `realfill config`) imports every plugin module, and diffusers alone adds seconds to it.

MAX_TOKENS = 32
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   steps_offset=1, clip_sample=False, prediction_type="epsilon")


def tiny_tokenizer():
    """A CLIP tokenizer over single bytes (GPT-2's byte-to-unicode table), built in memory."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + len(symbols) for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def tiny_text_config(tokenizer, hidden_size: int = 32, **extra):
    """The tiny CLIP text encoder's configuration for ``tokenizer`` (the tiny SD and FLUX backbones share it)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()), hidden_size=hidden_size, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=MAX_TOKENS, hidden_act="gelu", projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **extra,
    )


def _tiny_vae(scaling_factor: float, force_upcast: bool):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=scaling_factor, force_upcast=force_upcast,
        sample_size=64,
    )


def _tiny_unet(cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=(2, 4), use_linear_projection=True,
        norm_num_groups=16, **extra,
    )


def in_dtype(pipeline, dtype: torch.dtype):
    """Every module of ``pipeline`` in ``dtype``, as a pipeline loaded with ``torch_dtype`` has them
    (``torch.nn.Module.to``: diffusers' own ``to`` warns on every dtype cast)."""
    if dtype != torch.float32:
        for component in pipeline.components.values():
            if isinstance(component, torch.nn.Module):
                torch.nn.Module.to(component, dtype)
    return pipeline


def build_tiny_sd2(seed: int = 0):
    """A StableDiffusionInpaintPipeline with the tiny SD2-shaped parts, weights drawn from ``seed``."""
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline
    from transformers import CLIPTextModel

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _tiny_unet(cross_attention_dim=32)
        vae = _tiny_vae(0.18215, force_upcast=False)
        text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
    return StableDiffusionInpaintPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=DDPMScheduler(**SD_SCHEDULE), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(seed: int = 0, text_encoder_2_width: int = 32):
    """A StableDiffusionXLInpaintPipeline with tiny SDXL-shaped parts (two text encoders, text_time
    added conditioning, no aesthetic score: as stable-diffusion-xl-1.0-inpainting-0.1).

    ``text_encoder_2_width`` other than 32 makes the second encoder wider than the first, as in SDXL (768 and
    1280): diffusers' ``from_single_file`` tells the two apart by width (tests/test_single_file.py)."""
    from diffusers import DDPMScheduler, StableDiffusionXLInpaintPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_tokenizer()
    time_dim, pooled_dim = 8, 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = _tiny_unet(
            cross_attention_dim=32 + text_encoder_2_width, addition_embed_type="text_time",
            addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
            transformer_layers_per_block=(1, 2),
        )
        vae = _tiny_vae(0.13025, force_upcast=True)
        text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
        text_encoder_2 = CLIPTextModelWithProjection(tiny_text_config(tokenizer_2, hidden_size=text_encoder_2_width))
    return StableDiffusionXLInpaintPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), text_encoder_2=text_encoder_2.eval(),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet.eval(), scheduler=DDPMScheduler(**SD_SCHEDULE),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
    )


class TinySD2(SDBackbone):
    name = "tiny-sd2"
    summary = "SD2-inpainting architecture, tiny, random weights (seeded): CPU smoke runs and tests"

    native_resolution = 64

    class Config(ComponentConfig):
        name: Literal["tiny-sd2"] = "tiny-sd2"
        seed: Seed = 0  # the weights' seed
        # the weights' dtype, as the real backbones' key: the half-precision paths run on a CPU too
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def load(self, device="cpu", dtype=None):
        pipeline = in_dtype(build_tiny_sd2(self.config.seed), dtype or TORCH_DTYPES[self.config.dtype])
        return DiffusersInpaintModel(pipeline).to(device)


class TinySDXL(SDBackbone):
    name = "tiny-sdxl"
    summary = "SDXL-inpainting architecture (two text encoders, pooled embeds, time ids), tiny, random weights"

    native_resolution = 64

    class Config(ComponentConfig):
        name: Literal["tiny-sdxl"] = "tiny-sdxl"
        seed: Seed = 0
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def load(self, device="cpu", dtype=None):
        # as the real sdxl-inpaint: the pipeline in its dtype, then .to(device) alone (the VAE's upcast must
        # not depend on a dtype being passed here)
        pipeline = in_dtype(build_tiny_sdxl(self.config.seed), dtype or TORCH_DTYPES[self.config.dtype])
        return SDXLInpaintModel(pipeline).to(device)


@hookimpl
def realfill_register_backbones(registry):
    registry.add(TinySD2)
    registry.add(TinySDXL)
