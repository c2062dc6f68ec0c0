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
import zlib
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from realfill.attention import SDPA_BACKENDS

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


def tensor_seed(name: str, seed: int = 0) -> int:
    """The seed of one tensor's draw: a stable hash of its name (its module path) mixed with the run's seed,
    so each tensor's values depend on nothing else: not on the order the tensors are filled in, not on
    which other modules exist (fewer blocks leave the kept blocks' values as they were)."""
    return (zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1)) & 0xFFFF_FFFF_FFFF


@torch.no_grad()
def materialize(module: torch.nn.Module, dtype: torch.dtype, seed: int = 0, device: torch.device | str = "cpu",
                prefix: str = "") -> None:
    """Allocate ``module``'s meta tensors for real in ``dtype`` on ``device`` and fill them in place there:
    matrices and kernels ``N(0, 1/fan_in)`` (activations keep their scale through the depth), norm weights
    1, biases 0, and the buffers that carry values (CLIP's position ids) rebuilt.

    Each matrix is drawn by a generator on ``device`` seeded from its name (``prefix`` + its module path,
    :func:`tensor_seed`), straight into ``dtype``: on a GPU nothing is drawn on the host and copied (the
    CPU's one generator made real-size FLUX's 17 billion weights take minutes), and no float32 copy of a
    bfloat16 model ever exists. ``device="meta"`` allocates nothing (the counted-memory path)."""
    device = torch.device(device)
    module.to_empty(device=device)
    module.to(dtype)
    if device.type == "meta":
        return
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            generator = torch.Generator(device=device).manual_seed(tensor_seed(prefix + name, seed))
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=generator)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    for name, b in module.named_buffers():
        if name.endswith("position_ids"):
            b.copy_(torch.arange(b.shape[-1], device=device).expand_as(b))


def build_model(kind: str, dtype: torch.dtype, seed: int = 0, device: torch.device | str = "cpu",
                layers: dict | None = None, quantize: str = "none"):
    """``quantize`` (FLUX: ``backbone.quantize``) is applied to the denoiser after it is built, as a run's load
    does (real size: materialized in ``dtype`` on ``device``, then quantized in place there)."""
    if kind.startswith("tiny-"):  # the tiny twins (scripts/gpu-check.sh --cpu-dry-run): the backbone's own load
        from realfill.plugins import RealfillPlugins

        backbones = RealfillPlugins(autoload=False).registry("backbone")
        names = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
        extra = {"quantize": quantize} if quantize != "none" else {}
        config = backbones.get(kind).Config(dtype=names[dtype], **extra)
        return backbones.create(config).load(device=torch.device(device))
    architecture = _architecture()
    model = architecture.build_meta_flux(**layers) if kind == "flux" and layers else architecture.build_meta_model(kind)
    for name in ("tokenizer", "tokenizer_2"):  # the published tokenizers pad to 77 tokens
        if getattr(model.pipeline, name, None) is not None:
            getattr(model.pipeline, name).model_max_length = 77
    modules = {**model.trainable_modules(), **{f"frozen_{i}_{type(m).__name__}": m
                                                for i, m in enumerate(model.frozen_modules())}}
    for group, module in modules.items():
        materialize(module, dtype, seed, device, prefix=f"{group}.")
    model.device, model.dtype = torch.device(device), dtype
    if quantize != "none":
        from realfill_plugins.backbones.flux_family import quantize_transformer

        quantize_transformer(model.denoiser, quantize, device)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()  # the bf16 weights the int8 ones replaced
    return model


def _architecture():
    """The meta-device builders (``benchmarks/architecture.py``; this folder is on the path)."""
    import architecture  # imports realfill_plugins: only the meta and counted paths need it

    return architecture


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


#: the SDPA backends ``--attention`` pins for every attention call of every model: it is ``train.attention``
#: (realfill.attention), which the trainer's step and the sampling step enter
ATTENTION_BACKENDS = SDPA_BACKENDS
#: ``REALFILL_GPU_CHECK_FAULT``: a fault planted on purpose, so that the check's bisect and localisation are
#: exercised where nothing fails (``tests/test_gpu_check.py``). ``STAGE`` (``train`` or ``sample``), optionally
#: ``:checkpointing`` (only when gradient checkpointing is on) and ``:ATTN+ATTN`` (only under these pinned
#: backends). The train fault raises in the backward pass of the denoiser's last linear layer, the sample
#: fault in its forward, with CUDA's illegal-memory-access text so that the check treats the process as
#: poisoned, as it must for the real fault.
FAULT_ENV = "REALFILL_GPU_CHECK_FAULT"
FAULT_TEXT = "CUDA error: an illegal memory access was encountered (planted by REALFILL_GPU_CHECK_FAULT)"


def _plant_fault(model, stage: str, checkpointing: bool, attention: str | None) -> None:
    """Plant :data:`FAULT_ENV`'s fault in ``stage`` if its conditions hold (see there)."""
    import os

    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    parts = spec.split(":")
    if parts[0] != stage or ("checkpointing" in parts[1:] and not checkpointing):
        return
    backends = [p for p in parts[1:] if p != "checkpointing"]
    if backends and (attention or "auto") not in "+".join(backends).split("+"):
        return
    last = [m for m in model.denoiser.modules() if isinstance(m, torch.nn.Linear)][-1]

    def fail(*_):
        raise RuntimeError(FAULT_TEXT)

    if stage == "sample":
        last.register_forward_pre_hook(fail)
    else:
        def plant(module, args, output):  # returns None: the output stays the layer's own
            if output.requires_grad:
                output.register_hook(fail)

        last.register_forward_hook(plant)


class _LastOp(TorchDispatchMode):
    """Remembers the last aten operator dispatched (forward, recompute and backward alike): with
    ``CUDA_LAUNCH_BLOCKING=1`` a faulting kernel raises at its own launch, so the last operator is the one
    that faults."""

    def __init__(self):
        super().__init__()
        self.last, self.count = None, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.last, self.count = str(func), self.count + 1
        return func(*args, **(kwargs or {}))


def localize(step) -> dict:
    """Run ``step`` under autograd's anomaly mode (a failing backward node names itself and prints the
    forward call that made it) and :class:`_LastOp`; return what failed: the exception, the last operator
    dispatched, and the last frames of the traceback. Run it with ``CUDA_LAUNCH_BLOCKING=1`` (the check's
    bisect does) so that the error surfaces at the kernel that caused it."""
    import traceback

    mode = _LastOp()
    try:
        with torch.autograd.detect_anomaly(check_nan=False), mode:
            step()
    except Exception as error:  # what the localisation is for
        frames = traceback.extract_tb(error.__traceback__)[-6:]
        return {"failed": True, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}",
                "last_op": mode.last, "ops_dispatched": mode.count,
                "frames": [f"{Path(f.filename).name}:{f.lineno} {f.name}: {f.line}" for f in frames]}
    return {"failed": False, "last_op": mode.last, "ops_dispatched": mode.count}


def count_flops(step) -> int:
    """The FLOPs of one call of ``step`` (matrix products, convolutions, attention; forward, recompute and
    backward) by ``torch.utils.flop_counter.FlopCounterMode``."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def kernel_table(step, device: torch.device, rows: int = 10) -> dict:
    """One call of ``step`` under ``torch.profiler``: the ``rows`` costliest kernels by their own device
    time (on a CPU: the costliest operators by their own CPU time), as rows and as the profiler's table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        _now(device)
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    if device.type == "cuda":  # the kernels themselves: not the CPU operators that launched them (which carry
        # their kernels' time too) nor user annotations spanning many kernels
        rows_of = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                   and not getattr(e, "is_user_annotation", False)]
    else:
        rows_of = list(events)
    costly = sorted((e for e in rows_of if getattr(e, key, 0) > 0), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in rows_of) or 1
    top = [{"name": e.key[:120], "self_ms": round(getattr(e, key) / 1000, 3), "calls": e.count,
            "share": round(getattr(e, key) / total, 3)} for e in costly[:rows]]
    return {"by": "device (CUDA kernels)" if device.type == "cuda" else "CPU (operators)", "kernels": top,
            "table": events.table(sort_by=key, row_limit=rows, max_name_column_width=60)}


def make_trainer(loop: str, model, kind: str, resolution: int, batch: int, checkpointing: bool,
                 mixed_precision: str, lora: dict | None, attention: str = "auto"):
    """Our Trainer (``ours``) or the public recipe's per-step work (``reference``, benchmarks/reference_loop.py)
    on ``model``, at these settings, seed 0: the same batches and random draws."""
    from _stages import SCENE, run_config
    from reference_loop import ReferenceTrainer

    from realfill.device import model_compute
    from realfill.scene import load_scene
    from realfill.training import Trainer

    plugins, config = run_config(BACKBONES[kind], {"name": "lora", **(lora or {})}, resolution=resolution,
                                 batch_size=batch, gradient_checkpointing=checkpointing,
                                 mixed_precision=mixed_precision, allow_tf32=True, attention=attention)
    cls = {"ours": Trainer, "reference": ReferenceTrainer}[loop]
    return cls(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
               load_scene(SCENE), config.train, seed=0, compute=model_compute(model, config.train))


def _seeded(trainer):
    """A train step with the global RNG (LoRA dropout) reseeded from the step number, so that our loop and
    the reference draw the same dropout masks (benchmarks/test_training_step.py does the same)."""

    def step():
        torch.manual_seed(1000 + trainer.step)
        return trainer.train_step()

    return step


def _timed(step, n: int, device: torch.device) -> tuple[list[float], list]:
    seconds, results = [], []
    for _ in range(n):
        s = _now(device)
        results.append(step())
        seconds.append(_now(device) - s)
    return seconds, results


def _stage(name: str) -> None:
    """Say which stage runs (on stderr): the GPU check names the stage a dead process died in."""
    print(f"real-size: stage {name}", file=sys.stderr, flush=True)


def _release(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(kind: str, resolution: int, dtype: str, checkpointing: bool, batch: int, sample_batch: int,
            train_steps: int, device: str = "cpu", layers: dict | None = None, lora: dict | None = None,
            mixed_precision: str | None = None, activations: bool = False, attention: str | None = None,
            reference: bool = False, flops: bool = False, profile: bool = False, skip_sampling: bool = False,
            do_localize: bool = False, quantize: str = "none", reference_dtype: str | None = None) -> dict:
    """Build the model (on ``device``, in seconds there), then time one sampling step and ``train_steps``
    training steps of our Trainer; optionally the recipe's per-step work on a fresh model of the same seed
    (``reference``), each step's FLOPs (``flops``), a profiler table of one step (``profile``), all under
    one pinned SDPA backend (``attention``). ``do_localize`` runs one training step under :func:`localize`
    instead and reports it."""
    torch_dtype = DTYPES[dtype]
    mixed_precision = mixed_precision or DEFAULT_PRECISION[dtype]
    out: dict = {"kind": kind, "resolution": resolution, "dtype": dtype, "gradient_checkpointing": checkpointing,
                 "batch": batch, "sample_batch": sample_batch, "threads": torch.get_num_threads(), "device": device,
                 "mixed_precision": mixed_precision, "lora": lora or {}, "layers": layers or "real",
                 "attention": attention or "auto", "quantize": quantize}
    device = torch.device(device)
    from realfill.device import enable_tf32

    enable_tf32(device)  # as a run does for training and sampling (train.allow_tf32)
    _stage("build")
    start = time.perf_counter()
    model = build_model(kind, torch_dtype, device=device, layers=layers, quantize=quantize)
    out["build_s"] = round(_now(device) - start, 1)
    print(f"real-size: built {kind} in {out['build_s']} s", file=sys.stderr, flush=True)
    out["rss_after_build_mib"] = round(_rss_mib())

    from realfill.device import resolve_attention

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch_dtype)
    with resolve_attention(attention or "auto", device, half).pinned():  # the sampling step; the trainer's own
        # one sampling step: one denoiser call on sample_batch latents at this resolution, no gradients
        # (skipped by the activation count, which needs only the training forward)
        if not (activations or skip_sampling or do_localize):
            _stage("sample")
            _plant_fault(model, "sample", checkpointing, attention)
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

                def sample_step():
                    return model.denoise(latents, t, mask, latents, cond)

                times, _ = _timed(sample_step, 3, device)  # the first call warms up (allocations, kernel choice)
                out["sample_step_s"] = round(min(times[1:]), 4)  # the least disturbed call on a shared machine
                if flops:
                    out["sample_step_flops"] = count_flops(sample_step)
                if profile:
                    out["sample_step_kernels"] = kernel_table(sample_step, device)
                s = _now(device)
                image = torch.rand(1, 3, resolution, resolution, generator=g).to(device, torch_dtype) * 2 - 1
                model.decode_latents(model.encode_images(image, generator=g))
                out["sample_vae_encode_decode_s"] = round(_now(device) - s, 3)
                del cond, latents, mask
            out["rss_after_sampling_mib"] = round(_rss_mib())
            if device.type == "cuda":
                out["cuda_sampling_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                torch.cuda.reset_peak_memory_stats(device)

        # LoRA training steps through our Trainer (batches of real crops of the example scene)
        _stage("train")
        trainer = make_trainer("ours", model, kind, resolution, batch, checkpointing and not activations,
                               mixed_precision, lora, attention or "auto")
        _plant_fault(model, "train", checkpointing, attention)
        out["lora_trainable_params"] = sum(p.numel() for p in trainer.params)
        if do_localize:
            out["localize"] = localize(trainer.train_step)
            return out
        if activations:
            flux = _architecture().FLUX_TRANSFORMER
            real = {"double": flux["num_layers"], "single": flux["num_single_layers"]}
            out["activations_per_batch"] = activation_memory(trainer, real if kind == "flux" else None)
            out["peak_rss_mib"] = round(_rss_mib())
        steps, losses = _timed(_seeded(trainer), train_steps, device)
        out["train_step_s"] = [round(x, 3) for x in steps]
        out["loss"] = losses
        if device.type == "cuda":
            out["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
        if flops and train_steps:
            out["train_step_flops"] = count_flops(_seeded(trainer))
        if profile and train_steps:
            out["train_step_kernels"] = kernel_table(_seeded(trainer), device)
        if reference and train_steps:
            # the recipe's per-step work on a model of the same seed (a fresh one: the adapter is applied
            # once per model), built after ours is freed so that two real-size models never coexist
            _stage("reference")
            del trainer, model
            _release(device)
            # the recipe's own weights (SD2's public recipe: float32 under the same autocast)
            out["reference_dtype"] = reference_dtype or dtype
            model = build_model(kind, DTYPES[reference_dtype or dtype], device=device, layers=layers,
                                quantize=quantize)
            recipe = make_trainer("reference", model, kind, resolution, batch, checkpointing, mixed_precision, lora,
                                  attention or "auto")
            steps, losses = _timed(_seeded(recipe), train_steps, device)
            out["reference_train_step_s"] = [round(x, 3) for x in steps]
            out["reference_loss"] = losses
    out["peak_rss_mib"] = round(_rss_mib())
    return out


def bisect(kind: str, cases: list[dict], **settings) -> int:
    """Run one training step (or one sampling step, ``stage="sample"``) per case (``attention``,
    ``checkpointing``) on a fresh model, in this process, printing ``BISECT {json}`` as each finishes. A
    CUDA error poisons the process's context, so after one this stops with exit 3 and the caller goes on in
    a fresh process with the cases left (``benchmarks/gpu_check.py``)."""
    import traceback

    stage = settings.pop("stage", "train")
    for case in cases:
        start = time.perf_counter()
        row = dict(case)
        try:
            result = measure(kind, checkpointing=case["checkpointing"], attention=case["attention"],
                             train_steps=1 if stage == "train" else 0, skip_sampling=stage != "sample", **settings)
            losses = result.get("loss", [])
            row.update(passed=all(math.isfinite(x) for x in losses),
                       **({"error": f"non-finite loss {losses}"} if not all(math.isfinite(x) for x in losses) else {}))
        except Exception as error:  # what the bisect is for: each case's failure is its result
            row.update(passed=False, error=f"{type(error).__name__}: {str(error).splitlines()[0][:300]}",
                       frames=[f"{Path(f.filename).name}:{f.lineno} {f.name}"
                               for f in traceback.extract_tb(error.__traceback__)[-4:]])
        row["seconds"] = round(time.perf_counter() - start, 1)
        print("BISECT " + json.dumps(row), flush=True)
        _release(torch.device(settings.get("device", "cpu")))
        if not row["passed"] and poisons_context(row.get("error", "")):
            return 3
    return 0


def poisons_context(text: str) -> bool:
    """Whether an error leaves the CUDA context unusable (every later call in the process fails too)."""
    text = text.lower()
    return any(s in text for s in ("illegal memory access", "device-side assert", "unspecified launch failure",
                                   "misaligned address", "illegal instruction", "cuda error"))


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
    parser.add_argument("--reference-dtype", choices=list(DTYPES), default=None,
                        help="the recipe's weights with --reference (default: --dtype)")
    parser.add_argument("--quantize", choices=["none", "int8-weight-only"], default="none",
                        help="flux: the frozen transformer's linear weights (backbone.quantize)")
    parser.add_argument("--no-text-encoder", action="store_true", help="LoRA on the denoiser only")
    parser.add_argument("--double-layers", type=int, default=None, help="flux: double-stream blocks (real: 19)")
    parser.add_argument("--single-layers", type=int, default=None, help="flux: single-stream blocks (real: 38)")
    parser.add_argument("--t5-layers", type=int, default=None, help="flux: T5 encoder layers (real: 24)")
    parser.add_argument("--activations", action="store_true",
                        help="measure saved activations per block in one forward (no checkpointing), no train step")
    parser.add_argument("--attention", choices=ATTENTION_BACKENDS, default=None,
                        help="pin SDPA to one backend for every attention call (default: torch's choice)")
    parser.add_argument("--reference", action="store_true",
                        help="also time the public recipe's per-step work (reference_loop.py), same batches")
    parser.add_argument("--flops", action="store_true", help="count one training and one sampling step's FLOPs")
    parser.add_argument("--profile", action="store_true",
                        help="the ten costliest kernels of one training and one sampling step (torch.profiler)")
    parser.add_argument("--skip-sampling", action="store_true", help="the training steps only")
    parser.add_argument("--localize", action="store_true",
                        help="one training step under anomaly mode, naming the last operator dispatched "
                             "(run with CUDA_LAUNCH_BLOCKING=1); prints LOCALIZE {json}")
    parser.add_argument("--bisect", default=None, metavar="CASES",
                        help="a JSON list of {attention, checkpointing}: one step each, BISECT {json} per case")
    parser.add_argument("--bisect-stage", choices=["train", "sample"], default="train")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = {k: v for k, v in (("double_layers", args.double_layers), ("single_layers", args.single_layers),
                                ("t5_layers", args.t5_layers)) if v is not None}
    lora = {k: v for k, v in (("rank", args.rank), ("alpha", args.alpha)) if v is not None}
    if args.no_text_encoder:
        lora["train_text_encoder"] = False
    common = dict(resolution=args.resolution, dtype=args.dtype, batch=args.batch, sample_batch=args.sample_batch,
                  device=args.device, layers=layers or None, lora=lora, mixed_precision=args.mixed_precision,
                  quantize=args.quantize)
    if args.bisect:
        return bisect(args.kind, json.loads(args.bisect), stage=args.bisect_stage, **common)
    result = measure(args.kind, checkpointing=args.checkpointing,
                     train_steps=0 if args.activations else args.train_steps, activations=args.activations,
                     attention=args.attention, reference=args.reference, flops=args.flops, profile=args.profile,
                     skip_sampling=args.skip_sampling, do_localize=args.localize,
                     reference_dtype=args.reference_dtype, **common)
    if args.localize:
        print("LOCALIZE " + json.dumps(result["localize"]))
        return 0
    print(f"real-size: build {result['build_s']} s, train steps {result.get('train_step_s')} s, "
          f"losses {result.get('loss')}", file=sys.stderr)
    print("REAL-SIZE " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
