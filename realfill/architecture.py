"""The real-size architecture check: the published SD2-inpainting and SDXL-inpainting UNets and text
encoders, built on the ``meta`` device from their configurations (written here; nothing is downloaded, no
weights exist), with the ``lora`` adapter applied at the paper's settings. Counts parameters only.

The configurations are those of ``sd2-community/stable-diffusion-2-inpainting`` (the weights Stability AI published, mirrored) and
``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` (``unet/config.json``, ``text_encoder*/config.json``,
``vae/config.json``).
"""

from __future__ import annotations

import torch

SD2_UNET = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0,
)
SD2_TEXT = dict(  # OpenCLIP ViT-H/14's text tower, penultimate layer kept (23 of 24)
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=9, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=2048, attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SDXL_TEXT = dict(  # CLIP ViT-L/14
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
SDXL_TEXT_2 = dict(  # OpenCLIP ViT-bigG/14
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280,
)


def _count(module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def build_meta_model(kind: str):
    """A :class:`DiffusersInpaintModel` of the real ``sd2`` or ``sdxl`` architecture on the meta device."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from realfill.diffusion import DiffusersInpaintModel
    from realfill_plugins.backbones.tiny import SD_SCHEDULE, tiny_tokenizer

    with torch.device("meta"):
        if kind == "sd2":
            pipeline = StableDiffusionInpaintPipeline(
                vae=AutoencoderKL(**SD_VAE, scaling_factor=0.18215), text_encoder=CLIPTextModel(CLIPTextConfig(**SD2_TEXT)),
                tokenizer=tiny_tokenizer(), unet=UNet2DConditionModel(**SD2_UNET), scheduler=DDPMScheduler(**SD_SCHEDULE),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        elif kind == "sdxl":
            pipeline = StableDiffusionXLInpaintPipeline(
                vae=AutoencoderKL(**SD_VAE, scaling_factor=0.13025), text_encoder=CLIPTextModel(CLIPTextConfig(**SDXL_TEXT)),
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2)), tokenizer=tiny_tokenizer(),
                tokenizer_2=tiny_tokenizer(), unet=UNet2DConditionModel(**SDXL_UNET), scheduler=DDPMScheduler(**SD_SCHEDULE),
                requires_aesthetics_score=False,
            )
        else:
            raise ValueError(f"kind: 'sd2' or 'sdxl', not {kind!r}")
    return DiffusersInpaintModel(pipeline)


def lora_parameter_counts(kind: str, **lora_settings) -> dict[str, int]:
    """Parameter counts of the real ``kind`` architecture before and after applying ``lora`` (paper
    settings unless overridden): per module total, trainable (LoRA) per module, and the sums."""
    from realfill_plugins.adapters.lora import Lora

    model = build_meta_model(kind)
    base = {key: _count(module) for key, module in model.trainable_modules().items()}
    base["vae"] = _count(model.vae)
    model.freeze()
    with torch.device("meta"):
        Lora(Lora.Config(**lora_settings)).apply(model)
    counts: dict[str, int] = {f"{key}_params": value for key, value in base.items()}
    for key, module in model.trainable_modules().items():
        counts[f"{key}_lora"] = _count(module, trainable=True)
    counts["lora_total"] = sum(v for k, v in counts.items() if k.endswith("_lora"))
    counts["base_total"] = sum(base.values())
    return counts
