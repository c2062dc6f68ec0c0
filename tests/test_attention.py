"""``train.attention``: what ``auto`` picks by device, CUDA capability, torch version and dtype (a pure
function, so the GPU cases are checked here on the CPU), and that a pinned SDPA backend reaches every
attention call of every backbone, the FLUX transformer's included, in training (forward and backward) and
in sampling. The pin's effect is read from the aten operators that run (PyTorch's CPU flash-attention kernel
vs the math path's matmuls), not from any flag."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from realfill.attention import ATTENTION_SETTINGS, SDPA_BACKENDS, Attention, choose_attention
from realfill.config import resolve_config
from realfill.device import resolve_attention
from realfill.errors import UserError
from realfill.scene import load_scene
from realfill.training import Trainer
from realfill.device import model_compute

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

H200, A100, RTX4090 = (9, 0), (8, 0), (8, 9)


@pytest.mark.parametrize(("device", "capability", "version", "dtype", "compile", "expected"), [
    # Hopper under torch >= 2.11: cuDNN excluded as a defence (NaN-gradient reports pytorch/pytorch#196678,
    # NVIDIA/cudnn-frontend#1072), flash first for half precision
    ("cuda", H200, "2.11.0+cu130", "bfloat16", False, Attention("sdpa", ("flash", "efficient", "math"))),
    ("cuda", H200, "2.11.0+cu130", "float16", False, Attention("sdpa", ("flash", "efficient", "math"))),
    ("cuda", H200, "2.13.1", "float32", False, Attention("sdpa", ("efficient", "math"))),
    ("cuda", H200, "2.11.0", "bfloat16", True, Attention("sdpa", ("flash", "efficient", "math"))),
    # before 2.11 cuDNN was not SDPA's default on Hopper: SDPA's own choice
    ("cuda", H200, "2.10.2+cu128", "bfloat16", False, Attention("sdpa")),
    ("cuda", H200, "2.9.0", "bfloat16", False, Attention("sdpa")),
    # other GPUs: SDPA's own choice
    ("cuda", A100, "2.11.0", "bfloat16", False, Attention("sdpa")),
    ("cuda", RTX4090, "2.13.0", "float32", False, Attention("sdpa")),
    # a CPU: SDPA, or the small-math processor under train.compile (docs/benchmarks.md)
    ("cpu", None, "2.13.0+cpu", "float32", False, Attention("sdpa")),
    ("cpu", None, "2.13.0+cpu", "float32", True, Attention("small-math")),
    ("cpu", None, "2.13.0+cpu", "bfloat16", True, Attention("small-math")),
])
def test_auto_chooses_by_device_capability_torch_version_and_dtype(device, capability, version, dtype, compile,
                                                                   expected):
    assert choose_attention("auto", device, capability, version, dtype, compile) == expected


def test_a_backend_name_pins_that_backend_alone_everywhere_and_sdpa_default_pin_nothing():
    for name in SDPA_BACKENDS:
        for device, capability in (("cuda", H200), ("cuda", A100), ("cpu", None)):
            assert choose_attention(name, device, capability, "2.11.0", "bfloat16") == Attention("sdpa", (name,))
    for name in ("sdpa", "default"):
        assert choose_attention(name, "cuda", H200, "2.11.0", "bfloat16") == Attention(name)
    assert set(ATTENTION_SETTINGS) == {"auto", "sdpa", "default", "flash", "efficient", "cudnn", "math"}


def test_a_cuda_only_backend_on_a_cpu_is_a_user_error_naming_the_key():
    for name in ("efficient", "cudnn"):
        with pytest.raises(UserError, match=f"train.attention='{name}'"):
            resolve_attention(name, torch.device("cpu"), torch.float32)
    assert resolve_attention("flash", torch.device("cpu"), torch.float32) == Attention("sdpa", ("flash",))


class _Ops(TorchDispatchMode):
    """Counts the aten operators that run (forward and backward alike)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))

    def count(self, text: str) -> int:
        return sum(text in name for name in self.names)


FLASH = "_scaled_dot_product_flash_attention_for_cpu"


def _trainer(plugins, scene, backbone, attention):
    config = resolve_config(preset="smoke", components={"backbone": backbone, "adapter": "lora"},
                            overrides=["train.resolution=32", "train.batch_size=2", f"train.attention={attention}"],
                            plugins=plugins)
    model = plugins.registry("backbone").create(config.backbone).load()
    return Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene,
                   config.train, seed=config.seed, compute=model_compute(model, config.train))


@pytest.mark.parametrize("backbone", ["tiny-flux", "tiny-sd2"])
def test_the_pin_reaches_every_attention_in_the_training_step_forward_and_backward(plugins, example_scene, backbone):
    """Unpinned, SDPA on a CPU takes its flash kernel; pinned to ``math``, no flash kernel runs anywhere in
    the step (the FLUX transformer's joint attention, which diffusers dispatches itself, included), and
    pinned to ``flash``, its backward runs the flash backward kernel."""
    scene = load_scene(example_scene)
    counts = {}
    for attention in ("sdpa", "math", "flash"):
        trainer = _trainer(plugins, scene, backbone, attention)
        with _Ops() as ops:
            trainer.train_step()
        counts[attention] = (ops.count(FLASH) - ops.count(FLASH + "_backward"), ops.count(FLASH + "_backward"))
    if backbone == "tiny-flux":  # the transformer's 1 double + 1 single block, forward and backward
        assert counts["sdpa"][0] >= 2 and counts["sdpa"][1] >= 2, counts
    assert counts["math"] == (0, 0), counts
    assert counts["flash"] == counts["sdpa"], counts  # flash was SDPA's own CPU choice for every call


def test_the_pin_reaches_the_flux_pipelines_sampling(plugins):
    from realfill.sampling import sample_completions

    import numpy as np

    model = plugins.registry("backbone").create(plugins.registry("backbone").get("tiny-flux").Config()).load()
    target = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    kwargs = dict(prompt="a photo of sks", resolution=32, scheduler="auto", steps=2, guidance_scale=30.0,
                  num_samples=1, batch_size=1)
    counts = {}
    for name, attention in (("unpinned", None), ("math", Attention("sdpa", ("math",)))):
        with _Ops() as ops:
            sample_completions(model, target, mask, attention=attention, **kwargs)
        counts[name] = ops.count(FLASH)
    assert counts["unpinned"] >= 2 * 2 and counts["math"] == 0, counts  # 2 steps x (double + single block)


def test_realfill_config_takes_every_attention_name_and_refuses_a_typo_in_one_line(capsys):
    from realfill.cli import main

    for name in ATTENTION_SETTINGS:
        assert main(["config", "--preset", "paper-flux", "--set", f"train.attention={name}"]) == 0, name
        assert f'attention = "{name}"' in capsys.readouterr().out
    assert main(["config", "--preset", "paper-flux", "--set", "train.attention=flsh"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.attention" in err[0] and "'cudnn'" in err[0] and "flsh" in err[0], err


def test_a_cpu_run_pinned_to_a_cuda_only_backend_stops_before_any_weights_load(example_scene, tmp_path, capsys):
    from realfill.cli import main

    code = main(["fill", str(example_scene), "--preset", "smoke", "--set", "train.attention=cudnn",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.attention='cudnn'" in err[0], err
    assert not (tmp_path / "run").exists()
