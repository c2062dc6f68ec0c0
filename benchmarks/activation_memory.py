"""Training memory of the real-size architectures, counted exactly without a GPU and without weights.

The published SD2 / SDXL inpainting architectures (``benchmarks/architecture.py``) are built on PyTorch's
``meta`` device, which computes every shape and allocates nothing; the paper's LoRA is applied as a run
applies it, and one training step of our own ``Trainer`` (``loss()`` on a real batch of the example
scene's crops, then ``backward()``) runs under a dispatch mode that follows every tensor storage the step
creates, from its first op to its last reference (``weakref.finalize``: PyTorch keeps a tensor's Python
object alive while autograd or C++ code holds it). That gives, per batch:

- ``saved_mib``: what autograd holds for the backward pass when the forward ends (activations);
- ``peak_mib``: the most that is ever live in the step (the no-grad VAE encode of the batch, activations,
  gradients, the backward's transients), over the weights.

Weights and the optimizer state are counted from the parameters. Measured at batch 1 and 2: the
difference is the per-sample cost, which is linear in the batch. What this does not see: the CUDA caching
allocator's fragmentation and cuBLAS/cuDNN workspaces (the GPU check, ``scripts/gpu-check.sh``, measures
``torch.cuda.max_memory_allocated`` for real), and autocast, which the meta device has not: "bf16" here
means bf16 weights, LoRA and activations, as bf16 autocast makes the matmul and convolution outputs (norms
that autocast computes in float32 are counted at bf16). Attention is counted as the fused SDPA kernels of a
GPU store it (query, key, value, output, log-sum-exp), not the score matrices of the math fallback.

    python benchmarks/activation_memory.py sdxl --resolution 1024 --dtype bfloat16 --checkpointing
    python benchmarks/activation_memory.py --table      # the table of docs/memory.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MIB = 2**20


class LiveStorages(TorchDispatchMode):
    """Follows the bytes of every storage created under it until its last tensor dies; ``existing`` tensors'
    storages (the weights, whose transposed views ops return) are not counted."""

    def __init__(self, existing=()):
        super().__init__()
        self.existing = {t.untyped_storage()._cdata for t in existing}
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.existing:
            return
        if key not in self.refs:
            self.refs[key], self.sizes[key] = 0, storage.nbytes()
            self.live += self.sizes[key]
            self.peak = max(self.peak, self.live)
        self.refs[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.live -= self.sizes.pop(key)
            del self.refs[key]


class _FusedAttention(torch.autograd.Function):
    """What a GPU's flash / memory-efficient SDPA kernel keeps for backward: q, k, v, the output and the
    float32 log-sum-exp per query (meta tensors: shapes only)."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    return _FusedAttention.apply(query, key, value)


@contextlib.contextmanager
def gpu_attention():
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = fused_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def measure(kind: str, resolution: int, dtype: str, checkpointing: bool, batch: int) -> dict:
    from _stages import SCENE, run_config

    from architecture import build_meta_model
    from realfill.device import model_compute
    from realfill.scene import load_scene
    from realfill.training import Trainer

    torch_dtype = DTYPES[dtype]
    model = build_meta_model(kind)
    for name in ("tokenizer", "tokenizer_2"):  # the published tokenizers pad to 77 tokens
        if getattr(model.pipeline, name, None) is not None:
            getattr(model.pipeline, name).model_max_length = 77
    model.to(dtype=torch_dtype)
    model.device = torch.device("meta")
    precision = {torch.float32: "no", torch.bfloat16: "bf16", torch.float16: "fp16"}[torch_dtype]
    plugins, config = run_config(f"{kind}-inpaint", {"name": "lora"}, resolution=resolution, batch_size=batch,
                                 gradient_checkpointing=checkpointing, mixed_precision=precision,
                                 tune_allocator=False)
    with torch.device("meta"):
        trainer = Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
                          load_scene(SCENE), config.train, seed=0,
                          compute=model_compute(model, config.train))
    trainer.scaler = None  # the meta device has no autocast nor loss scaling: dtypes as described above
    trainer.autocast_dtype = None
    trainer._autocast = contextlib.nullcontext
    for p in trainer.params:
        p.data = p.data.to(torch_dtype)
    modules = [*model.trainable_modules().values(), *model.frozen_modules()]
    weights = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    trainable = sum(p.numel() for p in trainer.params)
    trainer._set_train_mode(True)
    batch_data = trainer.draw_batch()
    mode = LiveStorages([t for m in modules for t in (*m.parameters(), *m.buffers())])
    with gpu_attention(), mode:
        loss = trainer.loss(batch_data)
        saved = mode.live
        loss.backward()
    del loss
    return {
        "kind": kind, "resolution": resolution, "dtype": dtype, "gradient_checkpointing": checkpointing,
        "batch": batch, "weights_mib": round(weights / MIB), "trainable_params": trainable,
        # float32 LoRA parameters (trainable), their gradients and AdamW's two moments
        "optimizer_mib": round(trainable * 4 * 4 / MIB),
        "saved_mib": round(saved / MIB), "peak_mib": round(mode.peak / MIB),
    }


CASES = [("sd2", 512, "float32", False), ("sd2", 512, "bfloat16", False), ("sd2", 512, "bfloat16", True),
         ("sdxl", 1024, "float32", False), ("sdxl", 1024, "bfloat16", False), ("sdxl", 1024, "bfloat16", True),
         ("sdxl", 512, "bfloat16", False)]


def per_sample(kind: str, resolution: int, dtype: str, checkpointing: bool) -> dict:
    one = measure(kind, resolution, dtype, checkpointing, 1)
    two = measure(kind, resolution, dtype, checkpointing, 2)
    out = {k: v for k, v in one.items() if k not in ("batch", "saved_mib", "peak_mib")}
    out["saved_per_sample_mib"] = two["saved_mib"] - one["saved_mib"]
    out["peak_per_sample_mib"] = two["peak_mib"] - one["peak_mib"]
    out["peak_fixed_mib"] = one["peak_mib"] - out["peak_per_sample_mib"]
    return out


def fits(row: dict, batch: int, budget_gib: float = 80.0) -> float:
    """GiB a step at ``batch`` needs: weights + optimizer + the step's peak (fixed + per sample)."""
    total = row["weights_mib"] + row["optimizer_mib"] + row["peak_fixed_mib"] + batch * row["peak_per_sample_mib"]
    return total / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", nargs="?", choices=["sd2", "sdxl"])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--table", action="store_true", help="every case of docs/memory.md, as markdown")
    args = parser.parse_args(argv)
    if not args.table:
        print("ACTIVATION-MEMORY " + json.dumps(per_sample(args.kind, args.resolution, args.dtype, args.checkpointing)))
        return 0
    print("| model | px | weights, activations | grad. checkpointing | weights | saved activations / sample "
          "| step peak / sample | step peak, fixed | batch 16 needs |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for case in CASES:
        row = per_sample(*case)
        print(f"| {row['kind']} | {row['resolution']} | {row['dtype']} | {'yes' if row['gradient_checkpointing'] else 'no'} "
              f"| {row['weights_mib'] / 1024:.1f} GiB | {row['saved_per_sample_mib'] / 1024:.2f} GiB "
              f"| {row['peak_per_sample_mib'] / 1024:.2f} GiB | {row['peak_fixed_mib'] / 1024:.2f} GiB "
              f"| {fits(row, 16):.0f} GiB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
