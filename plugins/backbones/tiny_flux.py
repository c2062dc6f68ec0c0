"""``tiny-flux``: the FLUX.1 Fill architecture, tiny and with random weights (seeded), for CPU runs and tests.

The same parts as ``black-forest-labs/FLUX.1-Fill-dev`` (``FluxFillPipeline``): a ``FluxTransformer2DModel``
with double- and single-stream blocks, rotary position ids, a guidance embedding and 384 input channels
(64 noisy + 64 masked-image + 256 mask channels per 2x2 token); an ``AutoencoderKL`` with 8x downsampling, 16
latent channels and FLUX's scaling and shift factors; a CLIP text model (pooled) and a T5 encoder, built
from configs; tokenizers built in memory (a byte-level CLIP BPE as ``tiny.py``'s, a character-level T5
unigram), since nothing may be downloaded. The mechanics are real, the images are noise.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from realfill.components import Seed
from realfill.diffusion import TORCH_DTYPES
from realfill.hookspecs import hookimpl
from realfill_plugins.backbones.flux_family import FlowMatchingSettings, FluxBackbone
from realfill_plugins.backbones.tiny import tiny_text_config, tiny_tokenizer

T5_TOKENS = 32  # the tiny T5's max_sequence_length (FLUX.1: 512)
#: FLUX.1's VAE (``vae/config.json`` of FLUX.1-dev and FLUX.1-Fill-dev)
FLUX_VAE_FACTORS = dict(scaling_factor=0.3611, shift_factor=0.1159)
#: FLUX.1's ``scheduler/scheduler_config.json``
FLUX_SCHEDULE = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                     base_image_seq_len=256, max_image_seq_len=4096)


def tiny_t5_tokenizer(max_length: int = T5_TOKENS):
    """A T5 (unigram) tokenizer over single characters, built in memory: ``<pad>`` 0, ``</s>`` 1, ``<unk>``
    2, then the printable ASCII characters and the word-start marker."""
    from transformers import T5TokenizerFast  # on use, as below

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=max_length)


def tiny_flux_parts(seed: int = 0, *, in_channels: int | None = None) -> dict:
    """Tiny FLUX-shaped pipeline parts (scheduler, VAE, CLIP and T5 with their tokenizers, transformer),
    weights drawn from ``seed``. ``in_channels``: the transformer's packed input; default FLUX.1 Fill's
    (noisy latents, masked-image latents and the packed mask); FLUX.1 Kontext's takes the noisy latents only."""
    # diffusers and transformers on use: the CLI's start-up imports this module without them
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_t5_tokenizer()
    latent_channels, factor = 16, 8
    if in_channels is None:
        in_channels = 4 * (2 * latent_channels + factor * factor)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=in_channels, out_channels=4 * latent_channels,
            num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
            pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8),
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=latent_channels, layers_per_block=1, norm_num_groups=8,
            block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
            sample_size=64, **FLUX_VAE_FACTORS,
        )
        text_encoder = CLIPTextModel(tiny_text_config(tokenizer))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0,
        ))
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE), vae=vae.eval(),
                text_encoder=text_encoder.eval(), tokenizer=tokenizer, text_encoder_2=text_encoder_2.eval(),
                tokenizer_2=tokenizer_2, transformer=transformer.eval())


def build_tiny_flux(seed: int = 0):
    """A FluxFillPipeline with tiny FLUX-Fill-shaped parts, weights drawn from ``seed``."""
    from diffusers import FluxFillPipeline  # on use, as above

    return FluxFillPipeline(**tiny_flux_parts(seed))


class TinyFlux(FluxBackbone):
    name = "tiny-flux"
    summary = "FLUX.1 Fill architecture (flow matching, packed latents, CLIP + T5), tiny, random weights"
    native_resolution = 64

    class Config(FlowMatchingSettings):
        name: Literal["tiny-flux"] = "tiny-flux"
        seed: Seed = 0  # the weights' seed
        max_sequence_length: int = Field(T5_TOKENS, ge=1, le=T5_TOKENS)
        # the weights' dtype, as flux-fill's key (whose default is bfloat16): half precision runs on a CPU too
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def load(self, device="cpu", dtype=None):
        dtype = dtype or TORCH_DTYPES[self.config.dtype]
        model = self.wrap(build_tiny_flux(self.config.seed))
        model.to(device, None if dtype == TORCH_DTYPES["float32"] else dtype)  # float32: as built, no cast
        return self.quantize(model, device)


@hookimpl
def realfill_register_backbones(registry):
    registry.add(TinyFlux)
