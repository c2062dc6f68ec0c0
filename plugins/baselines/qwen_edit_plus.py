"""``qwen-edit-plus``: Qwen-Image-Edit-2509 (diffusers ``QwenImageEditPlusPipeline``), training-free, with
every reference as an extra image.

The pipeline takes several images and no mask: Picture 1 is the target with its hole blanked to mid-grey
(the only way to show this pipeline where to paint), Pictures 2.. are all the references (it reads them
all through Qwen2.5-VL, so none has to be chosen), and the prompt asks for the grey region to be filled
with the scene the references show. The edit, generated at the target's aspect ratio, is composited back
with the target's mask like a RealFill sample, so only the hole comes from the model.

Defaults, from the installed pipeline's ``__call__``: 50 steps, true classifier-free guidance 4.0
(``true_cfg_scale``; it needs a negative prompt, here " " as diffusers' Qwen-Image examples give), no
embedded guidance (``guidance_scale`` is for guidance-distilled checkpoints; 2509 is not), and its own
sizing (about 1 MP at the target's aspect ratio) unless ``resolution`` is set. Weights:
``Qwen/Qwen-Image-Edit-2509`` (the docstring's model; ``Qwen/Qwen-Image-Edit-2511`` loads the same way),
Apache-2.0, not gated, bfloat16, from a local diffusers folder (``model = PATH``) or the local model cache;
never downloaded.

``QwenImageEditInpaintPipeline`` (the original Qwen-Image-Edit with a mask) is not wrapped: it takes the
target alone, so it sees no reference, and the untuned masked inpainter is what ``backbone-untuned``
measures already.

No tiny twin: the pipeline's ``Qwen2VLProcessor`` cannot be built here. Its tokenizer (a byte-level
Qwen2 BPE with the vision markers) and its image processor (``Qwen2VLImageProcessorPil``) can, and so can a
tiny ``Qwen2_5_VLForConditionalGeneration``, but transformers 5.23 refuses to make the processor without
its ``Qwen2VLVideoProcessor``, which requires torchvision, not one of this project's dependencies (and
no video reaches an image editor). The tests cover the rest: the settings and their defaults, the
missing-weights message, and the skip in the comparison and the ablation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from realfill.components import GUIDANCE_MAX, STEPS_MAX, Seed
from realfill.hookspecs import hookimpl
from realfill_plugins.baselines.reference_editing import EditorSettings, ReferenceEditor, pil, working_size

DEFAULT_MODEL = "Qwen/Qwen-Image-Edit-2509"
HOW = (f"Qwen-Image-Edit-2509 is Apache-2.0 and not gated: `hf download {DEFAULT_MODEL}` fills the local model "
       "cache where there is network (Qwen/Qwen-Image-Edit-2511 works the same way: set --set baselines.qwen-edit-plus.model to "
       "it); or copy a diffusers QwenImageEditPlusPipeline folder here and pass it with --set baselines.qwen-edit-plus.model=PATH")
#: Picture 1 is the target with a grey hole, Pictures 2.. the references
PROMPT = ("Picture 1 is a photo with a missing region shown in flat grey. Fill in the grey region so that "
          "Picture 1 shows the same scene as the other pictures, matching their content, lighting and perspective; "
          "keep everything else in Picture 1 unchanged")


class QwenEditPlus(ReferenceEditor):
    name = "qwen-edit-plus"
    summary = ("Qwen-Image-Edit-2509 (QwenImageEditPlusPipeline), training-free: the target with a grey hole "
               "and every reference as images; 50 steps, true CFG 4.0")
    needs = (f"weights: {DEFAULT_MODEL} (Apache-2.0; local folder or model cache)",)
    pipeline_class_name = "QwenImageEditPlusPipeline"
    default_model = DEFAULT_MODEL
    how = HOW

    class Config(EditorSettings):
        name: Literal["qwen-edit-plus"] = "qwen-edit-plus"
        model: str = DEFAULT_MODEL
        steps: int = Field(50, ge=1, le=STEPS_MAX)
        guidance: float = Field(4.0, ge=0, le=GUIDANCE_MAX)  # true_cfg_scale
        prompt: str = PROMPT
        negative_prompt: str = " "
        max_sequence_length: int = Field(512, ge=1, le=1024)

    def call_arguments(self, scene, size):
        # start-up time: diffusers takes seconds to import; only an edit needs it
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import calculate_dimensions

        c = self.config
        h, w = scene.mask.shape
        if size is None:  # the pipeline's own rule, but for the target's ratio (it would take the last image's)
            width, height = calculate_dimensions(1024 * 1024, w / h)
        else:
            height, width = size
        images = [pil(scene.masked_target())]
        images += [pil(r, None if size is None else working_size(*r.shape[:2], max(size))) for r in scene.references]
        arguments = dict(image=images, prompt=c.prompt, negative_prompt=c.negative_prompt, true_cfg_scale=c.guidance,
                         num_inference_steps=c.steps, height=height, width=width,
                         max_sequence_length=c.max_sequence_length)
        names = [p.name for p in scene.reference_paths] or [str(i) for i in range(len(scene.references))]
        return arguments, {"references": names, "chosen_by": "all references, as Pictures 2..",
                           "target_as": "Picture 1, the hole in mid-grey"}


@hookimpl
def realfill_register_baselines(registry):
    registry.add(QwenEditPlus)
