"""Real-size figures: the published SD2-inpainting, SDXL-inpainting and FLUX.1 Fill architectures
(configurations in ``benchmarks/architecture.py``, nothing downloaded) with random weights, measured for one
LoRA training step (our Trainer, LoRA on the denoiser and text encoder) and one sampling step (one denoiser
call), at a given resolution, batch, weight dtype and gradient checkpointing, in this process. Prints one
JSON line.

``flux`` takes ``--double-layers``/``--single-layers``/``--t5-layers`` (default: the real 19 / 38 / 24) to
build fewer blocks of the real width, and ``--activations`` to measure, in one training forward pass without
gradient checkpointing, the bytes autograd saves for the backward pass in each block and outside them (every
saved tensor's storage, once, parameters excluded), and each block's input bytes; from them the activation
memory of the real depth, with and without checkpointing (see ``activation_memory``; measure two
blocks of each kind, ``--double-layers 2 --single-layers 2``: the first double-stream block saves less).

The weights are drawn straight into the asked dtype (meta device, then ``to_empty`` and a
``N(0, 1/fan_in)`` fill), so SDXL's 2.6B-parameter UNet never exists in fp32 when bf16 is asked for.

    python benchmarks/real_size.py sd2 --resolution 256 --dtype float32
    python benchmarks/real_size.py sdxl --resolution 256 --dtype bfloat16 --checkpointing
    python benchmarks/real_size.py sd2 --resolution 512 --batch 16 --device cuda    # on a GPU (not run here)
    python benchmarks/real_size.py flux --resolution 512 --dtype bfloat16 --double-layers 2 --single-layers 2 \
        --t5-layers 1 --activations                                                  # per block, on a CPU
    python benchmarks/real_size.py flux --resolution 512 --batch 4 --dtype bfloat16 --checkpointing \
        --mixed-precision bf16 --rank 64 --alpha 32 --device cuda                    # the whole model, on a GPU
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


def build_model(kind: str, dtype: torch.dtype, seed: int = 0, device: torch.device | str = "cpu",
                layers: dict | None = None):
    if kind.startswith("tiny-"):  # the tiny twins (scripts/gpu-check.sh --cpu-dry-run): the backbone's own load
        from realfill.plugins import RealfillPlugins

        backbones = RealfillPlugins(autoload=False).backbones
        names = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
        return backbones.create(backbones.get(kind).Config(dtype=names[dtype])).load(device=torch.device(device))
    from architecture import build_meta_flux, build_meta_model

    model = build_meta_flux(**layers) if kind == "flux" and layers else build_meta_model(kind)
    for name in ("tokenizer", "tokenizer_2"):  # the published tokenizers pad to 77 tokens
        if getattr(model.pipeline, name, None) is not None:
            getattr(model.pipeline, name).model_max_length = 77
    generator = torch.Generator().manual_seed(seed)
    for module in [*model.trainable_modules().values(), *model.frozen_modules()]:
        materialize(module, dtype, generator, device)
    model.device, model.dtype = torch.device(device), dtype
    return model


BACKBONES = {"sd2": "sd2-inpaint", "sdxl": "sdxl-inpaint", "flux": "flux-fill", "tiny-sd2": "tiny-sd2",
             "tiny-sdxl": "tiny-sdxl", "tiny-flux": "tiny-flux"}
#: the autocast that trains weights of each dtype by default (realfill.device.resolve_precision)
DEFAULT_PRECISION = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


def activation_memory(trainer, real_blocks: dict[str, int] | None = None) -> dict:
    """Bytes autograd saves for the backward pass in one training forward (``trainer.loss`` of a fresh
    batch; no backward), attributed to the transformer block running when each was saved (``double``,
    ``single``, in order) or to ``outside`` them, each storage counted once and parameters excluded; and
    each block's input bytes (what gradient checkpointing keeps of a block; storages counted once).

    The first double-stream block saves less than the others: the text stream enters it without gradients
    (the frozen T5 and context embedder), so its first operations save nothing. Measure two blocks of each
    kind: the last of each is the steady state, and ``real_blocks`` (the real depth) gives the projections:
    without checkpointing ``outside + each kind's first block + (n - 1) x its last``; with it ``outside +
    sum(block inputs) + the largest block``, which backward recomputes one block at a time. Needs
    ``gradient_checkpointing`` off (blocks under checkpoint save nothing autograd sees)."""
    from collections import defaultdict

    transformer = trainer.model.denoiser
    modules = [*trainer.model.trainable_modules().values(), *trainer.model.frozen_modules()]
    weights = {t.untyped_storage().data_ptr() for m in modules for t in [*m.parameters(), *m.buffers()]}
    seen: set[int] = set()
    saved: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    inputs: dict[str, dict[int, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    current: list = ["outside", 0]

    def pack(tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in weights and ptr not in seen and storage.nbytes() > 0:
            seen.add(ptr)
            saved[current[0]][current[1]] += storage.nbytes()
        return tensor

    handles = []
    for kind, blocks in (("double", transformer.transformer_blocks), ("single", transformer.single_transformer_blocks)):
        for i, block in enumerate(blocks):
            def pre(module, args, kwargs, kind=kind, i=i):
                current[:] = [kind, i]
                for name in ("hidden_states", "encoder_hidden_states"):
                    value = kwargs.get(name)
                    if isinstance(value, torch.Tensor):  # the two may be views of one storage
                        inputs[kind][i][value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()

            def post(module, args, kwargs, output):
                current[:] = ["outside", 0]

            handles += [block.register_forward_pre_hook(pre, with_kwargs=True),
                        block.register_forward_hook(post, with_kwargs=True)]
    trainer._set_train_mode(True)
    batch = trainer.draw_batch()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = trainer.loss(batch)
    finally:
        for handle in handles:
            handle.remove()
    del loss
    mib = 2**20
    out = {"outside_mib": round(sum(saved["outside"].values()) / mib, 1)}
    for kind in ("double", "single"):
        if saved[kind]:
            out[f"{kind}_blocks_mib"] = [round(saved[kind][i] / mib, 1) for i in sorted(saved[kind])]
            out[f"{kind}_block_inputs_mib"] = [round(sum(inputs[kind][i].values()) / mib, 1)
                                               for i in sorted(inputs[kind])]
    if real_blocks:
        blocks = kept = largest = 0.0
        for kind, n in real_blocks.items():
            per, ins = out.get(f"{kind}_blocks_mib", [0.0]), out.get(f"{kind}_block_inputs_mib", [0.0])
            blocks += per[0] + (n - 1) * per[-1]
            kept += ins[0] + (n - 1) * ins[-1]
            largest = max(largest, *per)
        out["real_depth"] = dict(real_blocks)
        out["projected_no_checkpointing_mib"] = round(out["outside_mib"] + blocks)
        out["projected_checkpointing_mib"] = round(out["outside_mib"] + kept + largest)
    return out


def measure(kind: str, resolution: int, dtype: str, checkpointing: bool, batch: int, sample_batch: int,
            train_steps: int, device: str = "cpu", layers: dict | None = None, lora: dict | None = None,
            mixed_precision: str | None = None, activations: bool = False) -> dict:
    from _stages import SCENE, run_config

    from realfill.scene import load_scene
    from realfill.training import Trainer

    torch_dtype = DTYPES[dtype]
    mixed_precision = mixed_precision or DEFAULT_PRECISION[dtype]
    out: dict = {"kind": kind, "resolution": resolution, "dtype": dtype, "gradient_checkpointing": checkpointing,
                 "batch": batch, "sample_batch": sample_batch, "threads": torch.get_num_threads(), "device": device,
                 "mixed_precision": mixed_precision, "lora": lora or {}, "layers": layers or "real"}
    device = torch.device(device)
    from realfill.device import enable_tf32

    enable_tf32(device)  # as a run does for training and sampling (train.allow_tf32)
    start = time.perf_counter()
    model = build_model(kind, torch_dtype, device=device, layers=layers)
    out["build_s"] = round(_now(device) - start, 1)
    out["rss_after_build_mib"] = round(_rss_mib())

    # one sampling step: one denoiser call on sample_batch latents at this resolution, no gradients (skipped
    # by the activation count, which needs only the training forward)
    if not activations:
        side = resolution // model.latent_factor
        g = torch.Generator().manual_seed(0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            cond = model.encode_prompts(["a photo of sks"] * sample_batch)
            latents = torch.randn(sample_batch, model.latent_channels, side, side, generator=g).to(device, torch_dtype)
            mask = model.latent_mask(torch.ones(sample_batch, 1, resolution, resolution, dtype=torch_dtype,
                                                device=device))
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
    plugins, config = run_config(BACKBONES[kind], {"name": "lora", **(lora or {})}, resolution=resolution,
                                 batch_size=batch, gradient_checkpointing=checkpointing and not activations,
                                 mixed_precision=mixed_precision, allow_tf32=True)
    trainer = Trainer(model, plugins.adapters.create(config.adapter), plugins.masking.create(config.masking),
                      load_scene(SCENE), config.train, seed=0)
    out["lora_trainable_params"] = sum(p.numel() for p in trainer.params)
    if activations:
        from architecture import FLUX_TRANSFORMER

        real = {"double": FLUX_TRANSFORMER["num_layers"], "single": FLUX_TRANSFORMER["num_single_layers"]}
        out["activations_per_batch"] = activation_memory(trainer, real if kind == "flux" else None)
        out["peak_rss_mib"] = round(_rss_mib())
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
    parser.add_argument("kind", choices=list(BACKBONES))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sample-batch", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU")
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16", "auto"], default=None,
                        help="train.mixed_precision (default: the weights' own: no for float32, bf16, fp16)")
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the adapter's, 8)")
    parser.add_argument("--alpha", type=float, default=None)
    parser.add_argument("--no-text-encoder", action="store_true", help="LoRA on the denoiser only")
    parser.add_argument("--double-layers", type=int, default=None, help="flux: double-stream blocks (real: 19)")
    parser.add_argument("--single-layers", type=int, default=None, help="flux: single-stream blocks (real: 38)")
    parser.add_argument("--t5-layers", type=int, default=None, help="flux: T5 encoder layers (real: 24)")
    parser.add_argument("--activations", action="store_true",
                        help="measure saved activations per block in one forward (no checkpointing), no train step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = {k: v for k, v in (("double_layers", args.double_layers), ("single_layers", args.single_layers),
                                ("t5_layers", args.t5_layers)) if v is not None}
    lora = {k: v for k, v in (("rank", args.rank), ("alpha", args.alpha)) if v is not None}
    if args.no_text_encoder:
        lora["train_text_encoder"] = False
    result = measure(args.kind, args.resolution, args.dtype, args.checkpointing, args.batch, args.sample_batch,
                     0 if args.activations else args.train_steps, args.device, layers=layers or None, lora=lora,
                     mixed_precision=args.mixed_precision, activations=args.activations)
    print("REAL-SIZE " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
