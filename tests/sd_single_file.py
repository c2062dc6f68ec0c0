"""The SD family's single-file layout, the reverse of diffusers' single-file conversion: a diffusers SD2 or
SDXL pipeline written as one original-format checkpoint (what ``from_single_file`` reads and Stability AI
publishes), so tests can load a real single file made from a tiny model. A test helper, not installed (issue 27): the
layout a single file must hold is ``SINGLE_FILE_MODULES`` in :mod:`realfill_plugins.backbones.sd_family`."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

# -------------------------------------------------------------------------------------------------
# Original-format single checkpoint files (what ``from_single_file`` reads), written from a diffusers
# pipeline: the reverse of diffusers' single-file conversion, so tests can load a real single file made from
# a tiny model. The key layouts are those of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
# and scripts/convert_diffusers_to_original_sdxl.py, derived here from the model's own blocks instead of the
# fixed SD sizes those scripts assume.
# -------------------------------------------------------------------------------------------------

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
    "add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",  # SDXL text_time
}
_UNET_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "norm2.": "out_layers.0.",
                "conv2.": "out_layers.3.", "time_emb_proj.": "emb_layers.1.", "conv_shortcut.": "skip_connection."}
_VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
_VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}


def _rename(state_dict: dict, prefixes: dict[str, str], inner: dict[str, dict[str, str]], what: str) -> dict:
    """Each key's longest matching diffusers prefix replaced by its original one, and the rest of the key by
    ``inner[prefix]``'s renames (resnet or attention internals). A key no prefix covers is an error: a
    silently dropped weight would load as random init."""
    out = {}
    for key, value in state_dict.items():
        prefix = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
        if prefix is None:
            raise ValueError(f"{what}: no original-format name for {key}")
        rest = key[len(prefix):]
        for old, new in inner.get(prefix, {}).items():
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        out[prefixes[prefix] + rest] = value
    return out


def unet_to_original(unet) -> dict:
    """A diffusers ``UNet2DConditionModel``'s weights in the LDM / SGM layout (without the
    ``model.diffusion_model.`` prefix): ``input_blocks`` / ``middle_block`` / ``output_blocks``."""
    state = unet.state_dict()
    per_block = unet.config.layers_per_block
    if not isinstance(per_block, int):
        raise ValueError("unet_to_original: layers_per_block must be one number for every block")
    prefixes, inner = dict(_UNET_TOP), {}

    def resnet(diffusers: str, original: str) -> None:
        prefixes[diffusers], inner[diffusers] = original, _UNET_RESNET

    levels = len(unet.config.down_block_types)
    index = 1  # input_blocks.0 is conv_in
    for i in range(levels):
        for j in range(per_block):
            resnet(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.")
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{index}.1."
            index += 1
        if i < levels - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{index}.0.op."
            index += 1
    resnet("mid_block.resnets.0.", "middle_block.0.")
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    resnet("mid_block.resnets.1.", "middle_block.2.")
    index = 0
    for i in range(levels):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
        for j in range(per_block + 1):
            resnet(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.")
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{index}.1."
            index += 1
        # the upsampler sits in the level's last output block, after its resnet (and attention)
        prefixes[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{index - 1}.{2 if has_attention else 1}.conv."
    return _rename(state, prefixes, inner, "unet")


def vae_to_original(vae) -> dict:
    """A diffusers ``AutoencoderKL``'s weights in the LDM layout (without ``first_stage_model.``): decoder
    levels numbered in reverse, attention projections as 1x1 convolutions."""
    state = vae.state_dict()
    levels = len(vae.config.down_block_types)
    prefixes = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    inner: dict[str, dict[str, str]] = {}
    for part in ("encoder", "decoder"):
        prefixes.update({f"{part}.conv_in.": f"{part}.conv_in.", f"{part}.conv_out.": f"{part}.conv_out.",
                         f"{part}.conv_norm_out.": f"{part}.norm_out."})
        for k in range(2):
            prefixes[f"{part}.mid_block.resnets.{k}."] = f"{part}.mid.block_{k + 1}."
            inner[f"{part}.mid_block.resnets.{k}."] = _VAE_RESNET
        prefixes[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        inner[f"{part}.mid_block.attentions.0."] = _VAE_ATTENTION
    for i in range(levels):
        up = levels - 1 - i
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{up}.upsample."
        for j in range(vae.config.layers_per_block + 1):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{up}.block.{j}."
            inner[f"encoder.down_blocks.{i}.resnets.{j}."] = inner[f"decoder.up_blocks.{i}.resnets.{j}."] = _VAE_RESNET
    out = _rename(state, prefixes, inner, "vae")
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            out[key] = value[:, :, None, None]  # linear -> 1x1 conv, as the LDM AttnBlock stores them
    return out


def _text_model_keys(encoder) -> dict:
    """A transformers CLIP text model's state dict with ``text_model.`` in front of the encoder's keys
    (recent transformers drop that level in ``CLIPTextModel``; the original files keep it)."""
    return {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
            for k, v in encoder.state_dict().items()}


def clip_to_original(encoder) -> dict:
    """A CLIP text encoder in the Hugging Face layout an original SDXL file stores under
    ``conditioner.embedders.0.transformer.`` (CLIP ViT-L)."""
    return _text_model_keys(encoder)


def open_clip_to_original(encoder) -> dict:
    """A CLIP text encoder in OpenCLIP's layout (SD2's ``cond_stage_model.model.``, SDXL's
    ``conditioner.embedders.1.model.``): fused q/k/v ``in_proj``, ``resblocks``, ``ln_*``, ``c_fc`` /
    ``c_proj``, and ``text_projection`` as the matrix the pooled output is multiplied by."""
    state = _text_model_keys(encoder)
    out = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight",
           "text_model.final_layer_norm.bias": "ln_final.bias"}
    layer_parts = {"self_attn.out_proj.": "attn.out_proj.", "layer_norm1.": "ln_1.", "layer_norm2.": "ln_2.",
                   "mlp.fc1.": "mlp.c_fc.", "mlp.fc2.": "mlp.c_proj."}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()  # OpenCLIP: pooled @ text_projection
        elif match := re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", key):
            layer, rest = match.groups()
            base = f"transformer.resblocks.{layer}."
            if fused := re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest):
                qkv.setdefault(f"{base}attn.in_proj_{fused[2]}", {})[fused[1]] = value
                continue
            part = next((p for p in layer_parts if rest.startswith(p)), None)
            if part is None:
                raise ValueError(f"text encoder: no OpenCLIP name for {key}")
            out[base + layer_parts[part] + rest[len(part):]] = value
        else:
            raise ValueError(f"text encoder: no OpenCLIP name for {key}")
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def pipeline_to_original(pipeline) -> dict:
    """A diffusers SD2 or SDXL (inpainting) pipeline's UNet, VAE and text encoder(s) as one state dict in
    the original layout: ``model.diffusion_model.*``, ``first_stage_model.*``, and SD2's OpenCLIP
    ``cond_stage_model.model.*`` or SDXL's ``conditioner.embedders.0.transformer.*`` (CLIP-L, Hugging Face
    layout) and ``conditioner.embedders.1.model.*`` (OpenCLIP bigG). Tokenizers and the scheduler have no
    weights: ``from_single_file`` takes them from its ``config`` folder."""
    out = {"model.diffusion_model." + k: v for k, v in unet_to_original(pipeline.unet).items()}
    out.update({"first_stage_model." + k: v for k, v in vae_to_original(pipeline.vae).items()})
    if getattr(pipeline, "text_encoder_2", None) is not None:
        clip_l, open_clip_g = clip_to_original(pipeline.text_encoder), open_clip_to_original(pipeline.text_encoder_2)
        out.update({"conditioner.embedders.0.transformer." + k: v for k, v in clip_l.items()})
        out.update({"conditioner.embedders.1.model." + k: v for k, v in open_clip_g.items()})
    else:
        out.update({"cond_stage_model.model." + k: v for k, v in open_clip_to_original(pipeline.text_encoder).items()})
    return out


def save_single_file(pipeline, path) -> Path:
    """Write :func:`pipeline_to_original` of ``pipeline`` to ``path`` (``.safetensors``): a single checkpoint
    file such as Stability AI publishes, for ``from_single_file``."""
    path = Path(path)
    save_file({k: v.detach().contiguous() for k, v in pipeline_to_original(pipeline).items()}, str(path))
    return path
