"""The real-size architecture check: the published SD2-inpainting and SDXL-inpainting UNets and text
encoders and FLUX.1 Fill's transformer, CLIP and T5 encoders, built on the ``meta`` device from their
configurations (written here; nothing is downloaded, no weights exist), with the ``lora`` adapter applied at the paper's settings. Counts parameters only.

The configurations are those of ``sd2-community/stable-diffusion-2-inpainting`` (the weights Stability AI published, mirrored) and
``diffusers/stable-diffusion-xl-1.0-inpainting-0.1`` (``unet/config.json``, ``text_encoder*/config.json``,
``vae/config.json``) and ``black-forest-labs/FLUX.1-Fill-dev`` (``transformer/``, ``vae/``, ``text_encoder/``,
``text_encoder_2/``).
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


#: black-forest-labs/FLUX.1-Fill-dev: transformer/config.json (384 input channels: noisy, masked image, mask)
FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=384, out_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_VAE = dict(  # vae/config.json: 16 latent channels, no quant convs
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
    scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
)
FLUX_CLIP = SDXL_TEXT  # text_encoder/config.json: CLIP ViT-L/14's text tower (pooled output)
FLUX_T5 = dict(  # text_encoder_2/config.json: T5 v1.1 XXL's encoder
    vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    layer_norm_epsilon=1e-6, is_gated_act=True, dense_act_fn="gelu_new",
)
FLUX_SCHEDULE = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                     base_image_seq_len=256, max_image_seq_len=4096)


def _count(module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def build_meta_flux(double_layers: int | None = None, single_layers: int | None = None, t5_layers: int | None = None):
    """A :class:`~realfill_plugins.backbones.flux_family.FluxInpaintModel` of FLUX.1 Fill's real architecture on the meta device;
    ``*_layers`` take fewer blocks of the real width (to measure per block on a CPU)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxFillPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from realfill_plugins.backbones.flux_family import FluxInpaintModel
    from realfill_plugins.backbones.tiny import tiny_tokenizer
    from realfill_plugins.backbones.tiny_flux import tiny_t5_tokenizer

    transformer = dict(FLUX_TRANSFORMER)
    if double_layers is not None:
        transformer["num_layers"] = double_layers
    if single_layers is not None:
        transformer["num_single_layers"] = single_layers
    t5 = {**FLUX_T5, **({"num_layers": t5_layers} if t5_layers is not None else {})}
    with torch.device("meta"):
        pipeline = FluxFillPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULE), vae=AutoencoderKL(**FLUX_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**FLUX_CLIP)), tokenizer=tiny_tokenizer(),
            text_encoder_2=T5EncoderModel(T5Config(**t5)), tokenizer_2=tiny_t5_tokenizer(512),
            transformer=FluxTransformer2DModel(**transformer),
        )
    return FluxInpaintModel(pipeline)


def build_meta_model(kind: str):
    """A :class:`DiffusersInpaintModel` of the real ``sd2`` or ``sdxl`` architecture (or the
    :class:`~realfill_plugins.backbones.flux_family.FluxInpaintModel` of ``flux``, FLUX.1 Fill) on the meta device."""
    if kind == "flux":
        return build_meta_flux()
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from realfill_plugins.backbones.sd_family import sd_inpaint_model
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
    return sd_inpaint_model(pipeline)


def text_encoder_parameter_counts(kind: str) -> dict[str, int]:
    """The parameters of each text encoder of the real ``kind`` architecture (``sd2``, ``sdxl``, ``flux``),
    by class name: what ``train.offload_text_encoders`` takes off the GPU (times 2 bytes in float16 or
    bfloat16, 4 in float32)."""
    model = build_meta_model(kind)
    return {type(e).__name__: _count(e) for e in model.text_encoder_modules()}


def lora_parameter_counts(kind: str, **lora_settings) -> dict[str, int]:
    """Parameter counts of the real ``kind`` architecture before and after applying ``lora`` (paper
    settings unless overridden): per module total, trainable (LoRA) per module, and the sums."""
    from realfill_plugins.adapters.lora import Lora

    model = build_meta_model(kind)
    base = {key: _count(module) for key, module in model.trainable_modules().items()}
    base["vae"] = _count(model.vae)
    if getattr(model, "t5", None) is not None:  # FLUX's frozen T5 encoder
        base["t5"] = _count(model.t5)
    model.freeze()
    with torch.device("meta"):
        Lora(Lora.Config(**lora_settings)).apply(model)
    counts: dict[str, int] = {f"{key}_params": value for key, value in base.items()}
    for key, module in model.trainable_modules().items():
        counts[f"{key}_lora"] = _count(module, trainable=True)
    counts["lora_total"] = sum(v for k, v in counts.items() if k.endswith("_lora"))
    counts["base_total"] = sum(base.values())
    return counts
