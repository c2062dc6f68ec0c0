"""The half-precision path of the real backbones, on the CPU (torch 2.13 has float16 and bfloat16 kernels
here): every weight dtype x adapter x allowed autocast trains and samples through ``realfill fill`` to a
finite, non-flat result; refused combinations stop before any weights load; the SDXL VAE encodes in float32
at every call; the schedulers never clip latents; a GPU config on a CPU machine stops in one line.

The same matrix runs on CUDA where torch sees a GPU (``-m cuda``; ``scripts/gpu-check.sh`` runs it)."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch

from realfill.cli import main
from realfill.config import resolve_config
from realfill.scene import load_scene, read_rgb
from tests.material import test_devices
from realfill.device import resolve_precision
from realfill.training import fine_tune
from realfill.device import model_compute

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

DEVICES = test_devices()  # cpu, and the same case on a GPU (marked cuda; skipped without one)
#: backbone x adapter x weight dtype, each with the autocast it trains under (resolve_precision's rule)
MATRIX = [(b, a, d) for b in ("tiny-sd2", "tiny-sdxl") for a in ("lora", "full") for d in ("float16", "bfloat16")]
AUTOCAST = {"float16": "fp16", "bfloat16": "bf16"}


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("backbone", "adapter", "dtype"), MATRIX)
def test_half_precision_fill_is_finite_and_not_flat(example_scene, tmp_path, capsys, device, backbone, adapter, dtype):
    """``realfill fill --preset smoke`` with float16 / bfloat16 weights: training losses finite, every sample
    finite (a NaN sample comes out black) and varied inside the hole, the result a real image. Before the
    fixes a full fine-tune crashed ("Half and Float") in training or sampling, and float16 SDXL met NaN."""
    run = tmp_path / "run"
    code = main(["fill", str(example_scene), "--preset", "smoke", "--backbone", backbone, "--adapter", adapter,
                 "--steps", "4", "--samples", "2", "--out", str(run), "--set", f"backbone.dtype={dtype}",
                 "--set", f"train.mixed_precision={AUTOCAST[dtype]}", "--set", f"device={device}",
                 "--set", "train.checkpoint_every=0"])
    assert code == 0, capsys.readouterr().err
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert log and all(np.isfinite(entry["loss"]) for entry in log)
    state = json.loads((run / "train_state.json").read_text())
    assert state["mixed_precision"] == AUTOCAST[dtype]
    scene = load_scene(example_scene)
    for path in [run / "result.png", *sorted((run / "samples").glob("*.png"))]:
        hole = read_rgb(path)[scene.mask].astype(float)
        assert hole.std() > 2.0 and hole.mean() > 2.0, path  # neither flat nor black (NaN)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("requested", ["no", "fp16", "bf16"])
def test_a_precision_the_weights_cannot_train_under_is_refused_before_loading(example_scene, tmp_path, capsys,
                                                                               dtype, requested):
    """float16 weights train only under fp16 autocast with a GradScaler, bfloat16 only under bf16: any other
    mode is one line naming both keys, exit 2, before any weights load or any file is written."""
    if requested == AUTOCAST[dtype]:
        assert resolve_precision(requested, getattr(torch, dtype), torch.device("cpu")) == requested
        assert resolve_precision("auto", getattr(torch, dtype), torch.device("cpu")) == requested
        return
    import realfill_plugins.backbones.tiny as tiny

    run = tmp_path / "run"
    loads = []
    original = tiny.TinySDXL.load
    tiny.TinySDXL.load = lambda self, *a, **k: loads.append(1) or original(self, *a, **k)
    try:
        code = main(["fill", str(example_scene), "--preset", "smoke", "--backbone", "tiny-sdxl", "--out", str(run),
                     "--set", f"backbone.dtype={dtype}", "--set", f"train.mixed_precision={requested}"])
    finally:
        tiny.TinySDXL.load = original
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "train.mixed_precision" in err and "backbone.dtype" in err and "Traceback" not in err
    assert not loads and not run.exists()


def test_float32_weights_take_every_precision_and_auto_follows_the_device(monkeypatch):
    import realfill.device as device

    cpu = torch.device("cpu")
    for mode in ("no", "fp16", "bf16"):
        assert resolve_precision(mode, torch.float32, cpu) == mode
    for native in (True, False):
        monkeypatch.setattr(device, "native_bf16", lambda device, native=native: native)
        assert resolve_precision("auto", torch.float32, cpu) == ("bf16" if native else "no")


def test_native_bf16_asks_the_trainers_gpu_without_emulation(monkeypatch):
    """torch's ``is_bf16_supported()`` counts emulation (a V100, a T4) by default and asks the current
    device; ``auto`` must ask the run's own GPU whether it has bf16 in hardware. (No GPU here: torch.cuda's
    two calls are recorded, not run.)"""
    import contextlib

    from realfill.device import native_bf16

    asked = {}

    @contextlib.contextmanager
    def device(d):
        asked["device"] = d
        yield

    def supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return False

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert native_bf16(torch.device("cuda:1")) is False
    assert asked == {"device": torch.device("cuda:1"), "including_emulation": False}


def test_tf32_is_enabled_for_cuda_runs_only():
    """The flags are process-wide settings, which a CPU-only torch has too (no GPU is touched)."""
    from realfill.device import enable_tf32

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        assert enable_tf32(torch.device("cpu")) is False and not torch.backends.cuda.matmul.allow_tf32
        assert enable_tf32(torch.device("cuda"), allow=False) is False and not torch.backends.cudnn.allow_tf32
        assert enable_tf32(torch.device("cuda")) is True
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("device", DEVICES)
def test_the_sdxl_vae_encodes_in_float32_at_every_call(plugins, example_scene, tmp_path, device):
    """A float16 SDXL loaded the way ``sdxl-inpaint`` loads it (the pipeline in float16, then ``.to(device)``
    alone): the VAE's weights and input are float32 at every encode of training, also after a sampling call
    (the pipeline's ``_encode_vae_image`` casts an upcast VAE back to float16), and the loss stays finite."""
    config = resolve_config(preset="smoke", components={"backbone": "tiny-sdxl"}, plugins=plugins, overrides=[
        "backbone.dtype=float16", "train.mixed_precision=fp16", "train.steps=2", "train.batch_size=4",
        "train.resolution=32", "train.checkpoint_every=0", f"device={device}"])
    model = plugins.registry("backbone").create(config.backbone).load(device=torch.device(device))
    assert model.dtype == torch.float16 and next(model.vae.parameters()).dtype == torch.float32
    seen = []
    model.vae.encoder.register_forward_pre_hook(
        lambda module, args: seen.append((next(module.parameters()).dtype, args[0].dtype)))
    adapter = plugins.registry("adapter").create(config.adapter)
    trainer = fine_tune(model, adapter, plugins.registry("masking").create(config.masking), load_scene(example_scene), config,
                        tmp_path, compute=model_compute(model, config.train))
    assert len(seen) == 2  # one VAE pass per step (image and masked image together)
    image = torch.rand(1, 3, 32, 32, device=device) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32, device=device)
    mask[..., 16:] = 1
    samples = model.generate(image, mask, "a photo of sks", generators=[torch.Generator().manual_seed(0)],
                             scheduler=model.make_scheduler("ddpm"), steps=2)
    assert torch.isfinite(samples).all()
    assert next(model.vae.parameters()).dtype == torch.float32  # settled again after the pipeline's call
    trainer._set_train_mode(True)
    loss = trainer.loss(trainer.draw_batch())
    assert torch.isfinite(loss)
    assert seen and all(dtypes == (torch.float32, torch.float32) for dtypes in seen), seen


def test_a_full_fine_tune_frees_its_gradients_and_samples_in_the_models_dtype(plugins, example_scene, tmp_path):
    """After a full fine-tune of a bfloat16 backbone: no parameter holds a gradient (a real SD2's are about
    3.5 GB), the saved weights are the float32 ones trained, and the denoiser is back in bfloat16 so that
    sampling, which has no autocast, sees one dtype."""
    from safetensors.torch import load_file

    config = resolve_config(preset="smoke", components={"backbone": "tiny-sd2", "adapter": "full"}, plugins=plugins,
                            overrides=["backbone.dtype=bfloat16", "train.mixed_precision=bf16", "train.steps=2",
                                       "train.batch_size=4", "train.resolution=32", "train.checkpoint_every=0"])
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
              load_scene(example_scene), config, tmp_path, compute=model_compute(model, config.train))
    assert all(p.grad is None for m in model.trainable_modules().values() for p in m.parameters())
    assert {p.dtype for p in model.denoiser.parameters()} == {torch.bfloat16}
    saved = load_file(str(tmp_path / "adapter" / "denoiser.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}
    for name, p in model.denoiser.named_parameters():
        torch.testing.assert_close(p.float(), saved[name].to(torch.bfloat16).float(), rtol=0, atol=0)


def test_latent_schedulers_never_clip(plugins):
    """A checkpoint whose scheduler config lacks ``clip_sample``: diffusers' DDPM and DDIM would default to
    clipping the latents to [-1, 1]; the training schedule and every sampler of a latent backbone do not."""
    from diffusers import DDPMScheduler

    from realfill_plugins.backbones.sd_family import DiffusersInpaintModel
    from realfill_plugins.backbones.tiny import SD_SCHEDULE, build_tiny_sd2

    pipeline = build_tiny_sd2()
    pipeline.scheduler = DDPMScheduler(**{k: v for k, v in SD_SCHEDULE.items() if k != "clip_sample"})
    assert pipeline.scheduler.config.clip_sample is True  # what the checkpoint's scheduler would do
    model = DiffusersInpaintModel(pipeline)
    assert model.noise_scheduler.config.clip_sample is False
    for name in ("ddpm", "ddim"):
        assert model.make_scheduler(name).config.clip_sample is False, name


def test_a_gpu_preset_on_a_machine_without_one_stops_in_one_line(example_scene, tmp_path, capsys, monkeypatch):
    """``--preset paper`` (device = "cuda") where torch sees no GPU: one line saying what was asked, what
    torch sees, how long it would take on the CPU, and how to go on anyway; exit 2, before any weights
    (here: the LoFTR ranker's and SD2's, neither on this machine) are looked for, no run folder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    assert main(["fill", str(example_scene), "--preset", "paper", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "device: 'cuda'" in err and f"torch {torch.__version__} sees no CUDA GPU" in err
    assert "--set device=cpu" in err and "156 h" in err and "not found" not in err
    assert not run.exists()
    assert main(["train", str(example_scene), "--preset", "paper-sdxl", "--out", str(run)]) == 2
    assert "sdxl" in capsys.readouterr().err.lower()


def test_resolution_defaults_come_from_the_backbone(plugins):
    """``train.resolution`` unset: the backbone's native size (SD2 512, SDXL 1024, the tiny ones 64); set, it
    wins; ``paper-sdxl`` is SDXL inpainting at 1024 px; ``paper`` names the community SD2 mirror."""
    for backbone, native in (("sd2-inpaint", 512), ("sdxl-inpaint", 1024), ("tiny-sdxl", 64)):
        config = resolve_config(preset="paper", components={"backbone": backbone}, plugins=plugins)
        assert config.train.resolution == native, backbone
    config = resolve_config(preset="paper", components={"backbone": "sdxl-inpaint"},
                            overrides=["train.resolution=768"], plugins=plugins)
    assert config.train.resolution == 768
    sdxl = resolve_config(preset="paper-sdxl", plugins=plugins)
    assert sdxl.backbone.name == "sdxl-inpaint" and sdxl.train.resolution == 1024
    assert sdxl.sample.resolution in (None, 1024)
    paper = resolve_config(preset="paper", plugins=plugins)
    assert paper.backbone.model == "sd2-community/stable-diffusion-2-inpainting"


def test_config_command_shows_the_mirror_and_sdxl_at_1024(capsys):
    assert main(["config", "--preset", "paper"]) == 0
    assert 'model = "sd2-community/stable-diffusion-2-inpainting"' in capsys.readouterr().out
    assert main(["config", "--preset", "paper-sdxl"]) == 0
    out = capsys.readouterr().out
    assert 'name = "sdxl-inpaint"' in out and "resolution = 1024" in out


def test_sd2_missing_weights_names_both_ids_the_single_file_and_where_it_looked(plugins, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from realfill.errors import MissingWeightsError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        plugins.registry("backbone").create(plugins.registry("backbone").get("sd2-inpaint").Config()).load()
    message = str(info.value)
    for text in ("sd2-community/stable-diffusion-2-inpainting", "stabilityai/stable-diffusion-2-inpainting",
                 "512-inpainting-ema.safetensors", "--set backbone.model=FILE", "hf download sd2-community"):
        assert text in message, text
    looked = message.split("looked in: ", 1)[1].split(")", 1)[0]
    assert looked.count(str(tmp_path / "hub")) == 2  # the cache, under both ids


@pytest.mark.slow
def test_a_cache_filled_under_the_withdrawn_stabilityai_id_is_found(tmp_path):
    """Users who downloaded SD2 inpainting before November 2025 have it cached as ``stabilityai/...``: the
    default (the community mirror's id) finds it there. A fresh process, so the cache folder is this one."""
    import os
    import subprocess
    import sys

    from realfill_plugins.backbones.tiny import build_tiny_sd2

    commit = "a" * 40
    snapshot = tmp_path / "hub" / "models--stabilityai--stable-diffusion-2-inpainting" / "snapshots" / commit
    build_tiny_sd2().save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(commit)
    code = ("from realfill.plugins import RealfillPlugins; import torch\n"
            "backbones = RealfillPlugins(autoload=False).registry(\"backbone\")\n"
            "model = backbones.create(backbones.get('sd2-inpaint').Config()).load()\n"
            "print(sum(p.numel() for p in model.denoiser.parameters()))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == sum(p.numel() for p in build_tiny_sd2().unet.parameters())


def test_config_shows_the_frozen_weights_dtype_and_the_autocast(capsys):
    """``paper`` stores its frozen weights in bf16 (LoRA float32, bf16 autocast); ``realfill config`` says how
    each preset stores and computes its weights in one comment line, and the TOML holds the keys."""
    expected = {
        "paper": "frozen bfloat16 (backbone.dtype), trained float32; autocast bf16",
        "paper-sdxl": "frozen bfloat16 (backbone.dtype), trained float32; autocast bf16",
        "paper-flux-24gb": "frozen bfloat16 (backbone.dtype), the transformer's linear weights int8-weight-only "
                           "(backbone.quantize), trained float32; autocast bf16",
        "smoke": "frozen float32 (backbone.dtype), trained float32; autocast none",
    }
    for preset, words in expected.items():
        assert main(["config", "--preset", preset]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[1] == f"# weights: {words} (train.mixed_precision)", preset
    assert main(["config", "--preset", "paper"]) == 0
    data = tomllib.loads(capsys.readouterr().out)
    assert data["backbone"]["dtype"] == "bfloat16" and data["train"]["mixed_precision"] == "bf16"


@pytest.mark.parametrize("device", test_devices())
@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux"])
def test_a_training_step_never_makes_the_host_wait_for_the_gpu(plugins, example_scene, device, backbone):
    """On CUDA, a step after the first (which fills the model's caches) under torch's sync debug mode: no
    operation in it waits for the GPU (no loss.item(), no pageable host-to-GPU copy, no norm read), in bf16
    autocast as the GPU presets train; on the CPU the same step, the same loss as ``train_step`` gives."""
    from realfill.training import Trainer

    config = resolve_config(preset="smoke", components={"backbone": backbone}, plugins=plugins,
                            overrides=["train.resolution=32", "train.batch_size=2", "train.mixed_precision=bf16",
                                       "adapter.train_text_encoder=false"])
    scene = load_scene(example_scene)

    def trainer():
        model = plugins.registry("backbone").create(config.backbone).load(device=torch.device(device))
        return Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
                       scene, config.train, seed=0, compute=model_compute(model, config.train))

    lazy = trainer()
    lazy.step_once()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        loss = lazy.step_once()
    finally:
        if device.startswith("cuda"):
            torch.cuda.set_sync_debug_mode("default")
    eager = trainer()  # after: a Trainer seeds the global RNG (LoRA dropout) as it is made
    expected = [eager.train_step() for _ in range(2)][1]
    assert float(loss) == pytest.approx(expected, rel=1e-6)
