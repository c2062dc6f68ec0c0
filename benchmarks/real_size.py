"""Real-size figures: the published SD2-inpainting and SDXL-inpainting architectures (configurations in
``realfill/architecture.py``, nothing downloaded) with random weights, measured for one LoRA training step
(our Trainer, the paper's LoRA on UNet and text encoder) and one sampling step (one UNet call), at a given
resolution, batch, weight dtype and gradient checkpointing, in this process. Prints one JSON line.

The weights are drawn straight into the asked dtype (meta device, then ``to_empty`` and a
``N(0, 1/fan_in)`` fill), so SDXL's 2.6B-parameter UNet never exists in fp32 when bf16 is asked for.

    python benchmarks/real_size.py sd2 --resolution 256 --dtype float32
    python benchmarks/real_size.py sdxl --resolution 256 --dtype bfloat16 --checkpointing
    python benchmarks/real_size.py sd2 --resolution 512 --batch 16 --device cuda    # on a GPU (not run here)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _now(device: torch.device) -> float:
    """The clock, after the device's queued work (a GPU runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@torch.no_grad()
def materialize(module: torch.nn.Module, dtype: torch.dtype, generator: torch.Generator,
                device: torch.device | str = "cpu") -> None:
    """Allocate ``module``'s meta tensors for real in ``dtype`` and fill them: matrices and kernels
    ``N(0, 1/fan_in)`` (activations keep their scale through the depth), norm weights 1, biases 0, and the
    buffers that carry values (CLIP's position ids) rebuilt."""
    module.to_empty(device=device)
    module.to(dtype)
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) / math.sqrt(fan_in))
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    for name, b in module.named_buffers():
        if name.endswith("position_ids"):
            b.copy_(torch.arange(b.shape[-1]).expand_as(b))


def build_model(kind: str, dtype: torch.dtype, seed: int = 0, device: torch.device | str = "cpu"):
    if kind.startswith("tiny-"):  # the tiny twins (scripts/gpu-check.sh --cpu-dry-run): the backbone's own load
        from realfill.plugins import RealfillPlugins

        backbones = RealfillPlugins(autoload=False).backbones
        names = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
        return backbones.create(backbones.get(kind).Config(dtype=names[dtype])).load(device=torch.device(device))
    from realfill.architecture import build_meta_model

    model = build_meta_model(kind)
    for name in ("tokenizer", "tokenizer_2"):  # the published tokenizers pad to 77 tokens
        if getattr(model.pipeline, name, None) is not None:
            getattr(model.pipeline, name).model_max_length = 77
    generator = torch.Generator().manual_seed(seed)
    for module in [*model.trainable_modules().values(), *model.frozen_modules()]:
        materialize(module, dtype, generator, device)
    model.device, model.dtype = torch.device(device), dtype
    return model


#: the autocast that trains weights of each dtype by default (realfill.training.resolve_precision)
DEFAULT_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def measure(kind: str, resolution: int, dtype: str, checkpointing: bool, batch: int, sample_batch: int,
            train_steps: int, device: str = "cpu", mixed_precision: str | None = None) -> dict:
    from _stages import SCENE, run_config

    from realfill.scene import load_scene
    from realfill.training import Trainer

    torch_dtype = DTYPES[dtype]
    mixed_precision = mixed_precision or DEFAULT_PRECISION[dtype]
    out: dict = {"kind": kind, "resolution": resolution, "dtype": dtype, "mixed_precision": mixed_precision,
                 "gradient_checkpointing": checkpointing, "batch": batch, "sample_batch": sample_batch,
                 "threads": torch.get_num_threads(), "device": device}
    device = torch.device(device)
    from realfill.training import enable_tf32

    enable_tf32(device)  # as a run does for training and sampling (train.allow_tf32)
    start = time.perf_counter()
    model = build_model(kind, torch_dtype, device=device)
    out["build_s"] = round(_now(device) - start, 1)
    out["rss_after_build_mib"] = round(_rss_mib())

    # one sampling step: one UNet call on sample_batch latents at this resolution, no gradients (under the
    # run's autocast, as the fine-tuned model samples in its weights' dtype: none for float32 weights)
    side = resolution // model.latent_factor
    g = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        cond = model.encode_prompts(["a photo of sks"] * sample_batch)
        latents = torch.randn(sample_batch, model.latent_channels, side, side, generator=g).to(device, torch_dtype)
        mask = torch.ones(sample_batch, 1, side, side, dtype=torch_dtype, device=device)
        t = torch.full((sample_batch,), 500, device=device)
        times = []
        for _ in range(3):  # the first call warms up (allocations, kernel choice)
            s = _now(device)
            model.denoise(latents, t, mask, latents, cond)
            times.append(_now(device) - s)
        out["sample_step_s"] = round(min(times[1:]), 3)  # the least disturbed call on a shared machine
        s = _now(device)
        image = torch.rand(1, 3, resolution, resolution, generator=g).to(device, torch_dtype) * 2 - 1
        model.decode_latents(model.encode_images(image, generator=g))
        out["sample_vae_encode_decode_s"] = round(_now(device) - s, 3)
    out["rss_after_sampling_mib"] = round(_rss_mib())
    if device.type == "cuda":
        out["cuda_sampling_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        torch.cuda.reset_peak_memory_stats(device)

    # one LoRA training step through our Trainer (batch of real crops of the example scene)
    backbone = kind if kind.startswith("tiny-") else f"{kind}-inpaint"
    plugins, config = run_config(backbone, {"name": "lora"}, resolution=resolution, batch_size=batch,
                                 gradient_checkpointing=checkpointing, mixed_precision=mixed_precision,
                                 allow_tf32=True)
    trainer = Trainer(model, plugins.adapters.create(config.adapter), plugins.masking.create(config.masking),
                      load_scene(SCENE), config.train, seed=0)
    out["lora_trainable_params"] = sum(p.numel() for p in trainer.params)
    steps, losses = [], []
    for _ in range(train_steps):
        s = _now(device)
        losses.append(trainer.train_step())
        steps.append(_now(device) - s)
    out["train_step_s"] = [round(x, 2) for x in steps]
    out["loss"] = losses
    out["peak_rss_mib"] = round(_rss_mib())
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["sd2", "sdxl", "tiny-sd2", "tiny-sdxl"])
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sample-batch", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None,
                        help="train.mixed_precision (default: the weights' own: no for float32, bf16, fp16)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args.kind, args.resolution, args.dtype, args.checkpointing, args.batch, args.sample_batch,
                     args.train_steps, args.device, args.mixed_precision)
    print("REAL-SIZE " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
