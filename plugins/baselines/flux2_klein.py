"""``flux2-klein``: FLUX.2 [klein] inpainting (diffusers ``Flux2KleinInpaintPipeline``), training-free, with
one reference as ``image_reference``; ``tiny-flux2-klein``: the same pipeline, tiny, random weights.

The pipeline conditions its transformer on the target's latents and the reference's (both in the sequence
beside the noisy latents) and pastes the known latents back at every step. It takes one reference: the one
with the most SIFT correspondences to the target's known pixels (``reference = "best-match"``; see
``reference_editing``).

Defaults, from the installed pipeline: 50 steps and guidance 8.0 (``__call__``'s; true classifier-free
guidance with an empty negative prompt, which a step-distilled checkpoint ignores), the prompt through
a Qwen3 encoder (512 tokens, hidden layers 9, 18, 27), and strength 1.0 rather than ``__call__``'s 0.8: the
docstring's reference example uses 1.0, and below 1.0 the hole would start from the target's blank pixels.
Sizing: the target's own, at most 1 MP (the pipeline's rule) unless ``resolution`` is set. Weights:
``black-forest-labs/FLUX.2-klein-base-9B`` (the docstring's model, undistilled, so the 50 steps and the
guidance apply), bfloat16, from a local diffusers folder (``model = PATH``) or the local model cache; never
downloaded. The 9B klein models are gated on the hub under the FLUX Non-Commercial License; the 4B ones
(``FLUX.2-klein-4B``, step-distilled: set ``steps = 4``; ``FLUX.2-klein-base-4B``) are Apache-2.0, as
Black Forest Labs published them (check the model page: this was not verifiable offline).

``tiny-flux2-klein`` builds the same pipeline offline from configs: a ``Flux2Transformer2DModel``, an
``AutoencoderKLFlux2`` (with its latent batch norm) and a ``Qwen3ForCausalLM`` text encoder, tiny, seeded
by ``weights_seed``, with a byte-level Qwen2 tokenizer and a Qwen-style chat template written here.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from realfill.components import GUIDANCE_MAX, STEPS_MAX, Seed
from realfill.hookspecs import hookimpl
from realfill_plugins.backbones.tiny import in_dtype
from realfill_plugins.baselines.reference_editing import (
    TINY_EDIT_SIDE_MAX,
    EditorSettings,
    ReferenceEditor,
    choose_reference,
    pil,
    working_size,
)

DEFAULT_MODEL = "black-forest-labs/FLUX.2-klein-base-9B"
GATED = (f"The FLUX.2 [klein] 9B models are gated on the hub (FLUX Non-Commercial License): accept it at "
         f"https://huggingface.co/{DEFAULT_MODEL} and log in (`hf auth login`), then `hf download {DEFAULT_MODEL}` "
         "fills the local model cache where there is network (the 4B models are Apache-2.0: "
         "--set baselines.flux2-klein.model=black-forest-labs/FLUX.2-klein-base-4B); or copy a diffusers Flux2KleinInpaintPipeline folder "
         "here and pass it with --set baselines.flux2-klein.model=PATH")
#: the tiny twin's Qwen-style chat template (the pipeline asks for enable_thinking=False; nothing to think here)
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TINY_TOKENS = 64


class Flux2Klein(ReferenceEditor):
    name = "flux2-klein"
    summary = ("FLUX.2 [klein] inpainting (Flux2KleinInpaintPipeline), training-free, the best-matching reference "
               "as image_reference; 50 steps, guidance 8.0")
    needs = (f"weights: {DEFAULT_MODEL} (gated; or the Apache-2.0 4B models; local folder or model cache)",)
    pipeline_class_name = "Flux2KleinInpaintPipeline"
    default_model = DEFAULT_MODEL
    how = GATED

    class Config(EditorSettings):
        name: Literal["flux2-klein"] = "flux2-klein"
        model: str = DEFAULT_MODEL
        steps: int = Field(50, ge=1, le=STEPS_MAX)
        guidance: float = Field(8.0, ge=0, le=GUIDANCE_MAX)  # true CFG (ignored by a step-distilled checkpoint)
        # at least 1e-3: diffusers keeps steps - int(steps * (1 - strength)) steps, none for a strength lost in
        # the rounding (5e-324 ended the fill with a traceback)
        strength: float = Field(1.0, ge=1e-3, le=1)
        max_sequence_length: int = Field(512, ge=1, le=512)
        # the Qwen3 text encoder's layers whose states are stacked (1 to 8 of them, each at most 64: the 8B
        # model has 36; a layer the encoder lacks fails only once the editor runs)
        text_encoder_out_layers: tuple[Annotated[int, Field(ge=0, le=64)], ...] = Field(
            (9, 18, 27), min_length=1, max_length=8)

    def call_arguments(self, scene, size):
        c = self.config
        index, details = choose_reference(scene, c.reference)
        reference = scene.references[index]
        arguments = dict(prompt=c.prompt, num_inference_steps=c.steps, guidance_scale=c.guidance, strength=c.strength,
                         max_sequence_length=c.max_sequence_length, text_encoder_out_layers=c.text_encoder_out_layers)
        if size is None:  # the pipeline's own sizing: the images' sizes, at most 1 MP
            arguments.update(image=pil(scene.target), mask_image=pil(scene.mask), image_reference=pil(reference))
        else:
            arguments.update(image=pil(scene.target, size), mask_image=pil(scene.mask, size),
                             image_reference=pil(reference, working_size(*reference.shape[:2], max(size))))
        return arguments, details


def tiny_qwen_tokenizer(max_length: int = TINY_TOKENS):
    """A Qwen2 tokenizer over single bytes (GPT-2's byte-to-unicode table, no merges), with the chat
    markers and template, built in memory."""
    # start-up time: transformers takes seconds to import; only a tiny twin's build needs it
    from transformers import Qwen2TokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {s: i for i, s in enumerate(bytes_to_unicode().values())}
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], model_max_length=max_length)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_flux2_klein(seed: int = 0):
    """A Flux2KleinInpaintPipeline with tiny FLUX.2-shaped parts, weights drawn from ``seed``."""
    # start-up time, as above
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinInpaintPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = tiny_qwen_tokenizer()
    latent_channels, hidden = 8, 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = Flux2Transformer2DModel(
            patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=3 * hidden, timestep_guidance_channels=32,
            axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
        )
        vae = AutoencoderKLFlux2(
            latent_channels=latent_channels, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=8,
            sample_size=64,
        )
        text_encoder = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=32, num_hidden_layers=3,
            num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=TINY_TOKENS,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
        ))
    return Flux2KleinInpaintPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True),
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, transformer=transformer.eval(),
    )


class TinyFlux2Klein(Flux2Klein):
    name = "tiny-flux2-klein"
    summary = "flux2-klein's pipeline, tiny, random weights built offline (tests and CPU smoke runs; noise)"
    needs = ()
    tiny = True

    class Config(Flux2Klein.Config):
        name: Literal["tiny-flux2-klein"] = "tiny-flux2-klein"
        model: Literal["tiny"] = "tiny"
        weights_seed: Seed = 0
        dtype: Literal["float32", "float16", "bfloat16"] = "float32"
        steps: int = Field(4, ge=1, le=STEPS_MAX)
        resolution: int | None = Field(64, ge=16, le=TINY_EDIT_SIDE_MAX)
        max_sequence_length: int = Field(TINY_TOKENS, ge=1, le=TINY_TOKENS)
        text_encoder_out_layers: tuple[Annotated[int, Field(ge=0, le=3)], ...] = Field(  # the tiny Qwen3's three
            (1, 2, 3), min_length=1, max_length=8)

    def build_pipeline(self, dtype):
        return in_dtype(build_tiny_flux2_klein(self.config.weights_seed), dtype)


@hookimpl
def realfill_register_baselines(registry):
    registry.add(Flux2Klein)
    registry.add(TinyFlux2Klein)
