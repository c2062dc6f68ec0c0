"""Training: the loss falls on a fixed batch; the target's unknown pixels never change the gradients;
2N steps == N steps, killed, resumed N; SDXL and the full adapter train end to end."""

from __future__ import annotations

import dataclasses
import platform
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from realfill.config import resolve_config
from realfill.scene import load_scene
from realfill.training import Trainer, fine_tune, loss_weights
from realfill.device import model_compute


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def scene(example_scene):
    return load_scene(example_scene)


def _config(plugins, *overrides, backbone="tiny-sd2", adapter="lora"):
    return resolve_config(preset="smoke", components={"backbone": backbone, "adapter": adapter},
                          overrides=["train.resolution=32", "train.batch_size=4", *overrides], plugins=plugins)


def _trainer(plugins, config, scene):
    model = plugins.registry("backbone").create(config.backbone).load()
    return Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene,
                   config.train, seed=config.seed, compute=model_compute(model, config.train))


@pytest.mark.slow
def test_loss_falls_when_overfitting_a_fixed_batch(plugins, scene):
    config = _config(plugins, "train.lr_denoiser=1e-2", "train.lr_text_encoder=1e-2", "adapter.dropout=0.0",
                     "train.prompt_dropout=0.0")
    trainer = _trainer(plugins, config, scene)
    trainer._set_train_mode(True)
    batch = trainer.draw_batch()
    state = trainer.generator.get_state()
    losses = []
    for _ in range(40):
        trainer.generator.set_state(state)  # the same noise, timesteps and VAE samples every step
        loss = trainer.loss(batch)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses  # measured: about 0.57x after 40 steps


def _gradients(plugins, config, scene):
    trainer = _trainer(plugins, config, scene)
    trainer._set_train_mode(True)
    trainer.loss(trainer.draw_batch()).backward()
    return {name: p.grad.clone() for name, p in enumerate(trainer.params) if p.grad is not None}


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux"])
def test_the_targets_unknown_pixels_do_not_change_the_gradients(plugins, scene, backbone):
    """Bit-identical gradients whatever the target's unknown pixels hold, on the SD family's 9-channel UNet
    and on FLUX's packed tokens (its loss excludes every 16x16-pixel token touching the unknown region)."""
    config = _config(plugins, "train.batch_size=8", "train.crop_scale_min=0.9", backbone=backbone)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, scene.target.shape, dtype=np.uint8)
    changed_unknown = dataclasses.replace(scene, target=np.where(scene.mask[..., None], noise, scene.target))
    changed_known = dataclasses.replace(scene, target=np.where(scene.mask[..., None], scene.target, noise))
    base = _gradients(plugins, config, scene)
    assert len(base) > 0
    same = _gradients(plugins, config, changed_unknown)
    assert all(torch.equal(base[k], same[k]) for k in base)
    different = _gradients(plugins, config, changed_known)  # the control: known pixels do matter
    assert not all(torch.equal(base[k], different[k]) for k in base)


def test_loss_weights_are_zero_on_every_cell_touching_the_unknown_region():
    unknown = torch.zeros(1, 1, 32, 32)
    unknown[..., 9, 20] = 1  # one pixel, in latent cell (1, 2)
    weights = loss_weights(unknown, 8)
    assert weights.shape == (1, 1, 4, 4)
    assert weights[0, 0, 1, 2] == 0 and weights.sum() == 15


class _Kill:
    """A plugin that kills the run (as Ctrl-C or a lost machine would) when step ``at`` ends."""

    def __init__(self, at):
        self.at = at

    def realfill_train_step_end(self, step):
        if step == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux"])
def test_two_n_steps_equal_n_steps_killed_and_resumed(plugins, scene, tmp_path, backbone):
    config = _config(plugins, "train.steps=6", "train.checkpoint_every=3", "train.log_every=1", backbone=backbone)

    def run(directory, resume=False):
        model = plugins.registry("backbone").create(config.backbone).load()
        fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene,
                  config, directory, plugins=plugins, resume=resume, compute=model_compute(model, config.train))

    run(tmp_path / "straight")
    kill = _Kill(at=5)  # after the checkpoint at step 3: steps 4 and 5 are lost
    plugins.register(kill, name="kill")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    plugins.pm.unregister(kill)
    assert not (tmp_path / "killed" / "adapter").exists()
    assert (tmp_path / "killed" / "checkpoint" / "state.pt").is_file()
    run(tmp_path / "killed", resume=True)
    a = load_file(tmp_path / "straight" / "adapter" / "pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4, 5, 6]
    straight = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in log] == [e["loss"] for e in straight]
    assert set(log[0]) == {"step", "loss", "lr", "seconds"} and log[0]["lr"] == {"denoiser": 2e-4, "text_encoder": 4e-5}


@pytest.mark.parametrize(("backbone", "adapter"), [("tiny-sdxl", "lora"), ("tiny-sd2", "full")])
def test_trains_and_samples_end_to_end(plugins, scene, tmp_path, backbone, adapter):
    from realfill.run import check_device, load_trained
    from realfill.sampling import sample_completions

    config = _config(plugins, "train.steps=3", backbone=backbone, adapter=adapter)
    model = plugins.registry("backbone").create(config.backbone).load()
    before = {k: v.clone() for k, v in model.denoiser.state_dict().items()}
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    trained = load_trained(config, tmp_path, plugins=plugins, compute=check_device(config, plugins))  # a fresh model with the saved adapter
    kwargs = dict(prompt="a photo of sks", resolution=32, steps=2, num_samples=1, seed=0)
    ours = sample_completions(model, scene.target, scene.mask, **kwargs)[0]
    reloaded = sample_completions(trained, scene.target, scene.mask, **kwargs)[0]
    assert ours.shape == scene.target.shape
    np.testing.assert_allclose(ours.astype(int), reloaded.astype(int), atol=1)
    state = model.denoiser.state_dict()
    if adapter == "full":
        assert any(not torch.equal(v, before[k]) for k, v in state.items())
    else:  # LoRA's B matrices start at zero: training moved them
        assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)


def test_bf16_autocast_trains_on_the_cpu_and_auto_follows_the_cpu(plugins, scene, monkeypatch):
    """bf16 autocast on the CPU: the denoiser computes in bfloat16 (the loss moves off the float32 one by
    bf16 rounding, not more), the trained parameters stay float32; ``auto`` takes bf16 exactly where the
    CPU has native bf16 instructions; fp16 autocast always comes with a GradScaler."""
    from realfill.device import native_bf16

    losses, trainers = {}, {}
    for precision in ("no", "bf16"):
        trainer = _trainer(plugins, _config(plugins, f"train.mixed_precision={precision}", "adapter.dropout=0.0"), scene)
        trainer._set_train_mode(True)
        losses[precision] = float(trainer.loss(trainer.draw_batch()).detach())
        trainers[precision] = trainer
    assert losses["bf16"] != losses["no"]  # autocast was on
    assert losses["bf16"] == pytest.approx(losses["no"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in trainers["bf16"].params)
    trainers["bf16"].train_step()
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in trainers["bf16"].params)

    auto = _trainer(plugins, _config(plugins, "train.mixed_precision=auto"), scene)
    assert auto.mixed_precision == ("bf16" if native_bf16(torch.device("cpu")) else "no")
    import realfill.device as device

    for native in (True, False):
        monkeypatch.setattr(device, "native_bf16", lambda device, native=native: native)
        chosen = _trainer(plugins, _config(plugins, "train.mixed_precision=auto"), scene)
        assert chosen.mixed_precision == ("bf16" if native else "no")
        assert chosen.autocast_dtype == (torch.bfloat16 if native else None)
    fp16 = _trainer(plugins, _config(plugins, "train.mixed_precision=fp16"), scene)  # CPUs have fp16 kernels now
    assert fp16.autocast_dtype == torch.float16 and fp16.scaler is not None  # always with loss scaling


def test_the_run_records_what_auto_precision_resolved_to(plugins, scene, tmp_path, monkeypatch):
    import realfill.device as device

    monkeypatch.setattr(device, "native_bf16", lambda device: True)
    config = _config(plugins, "train.mixed_precision=auto", "train.steps=1", "train.checkpoint_every=0")
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, compute=model_compute(model, config.train))
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state == {"finished": True, "steps": 1, "mixed_precision": "bf16"}


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-sdxl"])
def test_gradient_checkpointing_and_attention_kernels_change_speed_not_results(plugins, scene, backbone):
    """The memory and speed options are pure implementation choices: gradient checkpointing (recompute
    activations in the backward pass) and the attention kernel (SDPA or diffusers' default) give the same
    gradients as the plain run, to float tolerance."""
    base_settings = ("adapter.dropout=0.0", "train.attention=sdpa", "train.gradient_checkpointing=false")
    base = _gradients(plugins, _config(plugins, *base_settings, backbone=backbone), scene)
    assert len(base) > 0
    # each option is really on: the UNet checkpoints, the attention processors change
    trainer = _trainer(plugins, _config(plugins, *base_settings, backbone=backbone), scene)
    unet = trainer.model.denoiser
    assert not unet.is_gradient_checkpointing
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    trainer = _trainer(plugins, _config(plugins, "train.gradient_checkpointing=true", "train.attention=default",
                                        backbone=backbone), scene)
    assert trainer.model.denoiser.is_gradient_checkpointing
    assert {type(p).__name__ for p in trainer.model.denoiser.attn_processors.values()} == {"AttnProcessor"}
    for option in ("train.gradient_checkpointing=true", "train.attention=default"):
        other = _gradients(plugins, _config(plugins, *base_settings, option, backbone=backbone), scene)
        assert other.keys() == base.keys(), option
        for key in base:
            torch.testing.assert_close(other[key], base[key], rtol=1e-4, atol=1e-6, msg=lambda m: f"{option}: {m}")


def _page_faults_of_reuse(megabytes: int = 8, cycles: int = 20) -> int:
    import resource

    n = megabytes * 2**20 // 4
    for _ in range(5):  # first uses: the heap grows to hold the block once
        torch.ones(n).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(cycles):  # what a training step does with its activations: allocate, fill, free
        torch.ones(n).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator tuning is glibc's mallopt")
def test_tuned_allocator_reuses_freed_step_memory_instead_of_faulting_it_back_in():
    from realfill.device import tune_cpu_allocator

    assert tune_cpu_allocator() and tune_cpu_allocator()  # applies, and applying again is harmless
    pages_per_cycle = 8 * 2**20 // 4096
    # untuned, each 8 MiB block can be a fresh mmap: ~2048 faults per cycle; tuned, the heap keeps it
    assert _page_faults_of_reuse() < pages_per_cycle


def test_compiled_vae_encoder_vectors_are_no_wider_than_its_narrowest_activation(plugins):
    """train.compile: inductor's CPU vectors for the VAE encoder hold no more floats than its narrowest
    GroupNorm has channels (tiny-sd2's: 8, so 256 bits where the CPU has AVX512); wide encoders and a
    user's own ``cpp.simdlen`` keep inductor's default."""
    from torch import nn
    from torch._inductor import config, cpu_vec_isa

    from realfill.compiling import cpu_vector_bits

    encoder = plugins.registry("backbone").create(plugins.registry("backbone").get("tiny-sd2").Config()).load().vae.encoder
    narrowest = min(m.num_channels for m in encoder.modules() if isinstance(m, nn.GroupNorm))
    assert narrowest == 8
    default = cpu_vec_isa.pick_vec_isa()
    bits = cpu_vector_bits(encoder)
    if default and default.bit_width() // 32 > narrowest:  # e.g. AVX512: 16 lanes
        assert bits in {isa.bit_width() for isa in cpu_vec_isa.valid_vec_isa_list()}
        assert bits // 32 <= narrowest < default.bit_width() // 32
    else:
        assert bits is None
    wide = nn.Sequential(nn.Conv2d(3, 128, 3), nn.GroupNorm(32, 128), nn.SiLU())
    assert cpu_vector_bits(wide) is None
    with config.patch({"cpp.simdlen": 512}):
        assert cpu_vector_bits(encoder) is None


def test_small_math_attention_takes_the_plain_matmuls_only_where_a_head_sees_few_pairs():
    """SmallMathAttnProcessor: at most 64 x 64 query-key pairs per head run diffusers' plain processor,
    more run SDPA; token sequences (UNet) and feature maps (VAE) alike, self- and cross-attention."""
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    from realfill.attention import SmallMathAttnProcessor

    torch.manual_seed(0)
    sequence = Attention(32, heads=2, dim_head=16)
    cross = Attention(32, cross_attention_dim=24, heads=2, dim_head=16)
    spatial = Attention(16, heads=1, dim_head=16, norm_num_groups=8, residual_connection=True, bias=True)
    cases = [  # (module, input, encoder states, expected processor)
        (sequence, torch.randn(2, 64, 32), None, AttnProcessor),
        (sequence, torch.randn(2, 65, 32), None, AttnProcessor2_0),
        (cross, torch.randn(2, 128, 32), torch.randn(2, 32, 24), AttnProcessor),
        (cross, torch.randn(2, 129, 32), torch.randn(2, 32, 24), AttnProcessor2_0),
        (spatial, torch.randn(2, 16, 8, 8), None, AttnProcessor),
        (spatial, torch.randn(2, 16, 9, 9), None, AttnProcessor2_0),
    ]
    with torch.no_grad():
        for module, x, states, expected in cases:
            outputs = {}
            for processor in (SmallMathAttnProcessor(), AttnProcessor(), AttnProcessor2_0()):
                module.set_processor(processor)
                outputs[type(processor)] = module(x, encoder_hidden_states=states)
            # the same arithmetic, bit for bit, as the processor it should have picked
            assert torch.equal(outputs[SmallMathAttnProcessor], outputs[expected]), (tuple(x.shape), expected)
            other = AttnProcessor2_0 if expected is AttnProcessor else AttnProcessor
            assert not torch.equal(outputs[SmallMathAttnProcessor], outputs[other])  # the two really differ


def test_auto_attention_is_small_math_only_for_a_compiled_cpu_run(plugins, scene):
    """train.attention=auto (the default): SmallMathAttnProcessor where train.compile runs on a CPU, SDPA
    otherwise; an explicit sdpa stays SDPA under compile."""
    def processors(*overrides):
        trainer = _trainer(plugins, _config(plugins, *overrides), scene)
        modules = (trainer.model.denoiser, trainer.model.vae)
        kinds = {type(p).__name__ for module in modules for p in module.attn_processors.values()}
        trainer.finish()  # back to eager forwards; nothing was compiled (inductor compiles at the first step)
        return kinds

    assert processors("train.attention=auto", "train.compile=true") == {"SmallMathAttnProcessor"}
    assert processors("train.attention=auto", "train.compile=false") == {"AttnProcessor2_0"}
    assert processors("train.attention=sdpa", "train.compile=true") == {"AttnProcessor2_0"}
    # the pixel-space backbone (the cpu preset's) sets the same processors on its own attention layers
    from diffusers.models.attention_processor import Attention

    pixel = plugins.registry("backbone").create(plugins.registry("backbone").get("scratch-pixel").Config(attention_levels=1)).load()
    layers = [m for m in pixel.denoiser.modules() if isinstance(m, Attention)]
    assert layers
    for kind, name in [("small-math", "SmallMathAttnProcessor"), ("sdpa", "AttnProcessor2_0"),
                       ("default", "AttnProcessor")]:
        pixel.set_attention(kind)
        assert {type(m.processor).__name__ for m in layers} == {name}, kind


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-sdxl", "tiny-flux"])
def test_frozen_text_encoders_leave_the_device_once_the_prompts_are_encoded(plugins, scene, backbone):
    """``train.offload_text_encoders``: with the text encoders frozen, every one of them (SDXL's two, FLUX's
    CLIP and T5) is on ``text_encoder_home`` once the trainer is built, the denoiser stays, and training
    gives the same losses (the encoded prompts are kept). On a CPU the home is the CPU itself, so the test
    sends them to PyTorch's ``meta`` device, where a module that ran would fail: nothing reads them.
    Where a text encoder trains, nothing moves."""
    frozen = ("adapter.train_text_encoder=false", "adapter.dropout=0.0")

    def build(*overrides, home="cpu"):
        config = _config(plugins, *overrides, backbone=backbone)
        model = plugins.registry("backbone").create(config.backbone).load()
        return Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
                       scene, config.train, seed=config.seed, text_encoder_home=home,
                       compute=model_compute(model, config.train))

    kept = build(*frozen, "train.offload_text_encoders=false")
    offloaded = build(*frozen, "train.offload_text_encoders=true", home="meta")
    encoders = offloaded.model.text_encoder_modules()
    assert len(encoders) == {"tiny-sd2": 1, "tiny-sdxl": 2, "tiny-flux": 2}[backbone]
    assert {p.device.type for e in encoders for p in e.parameters()} == {"meta"}
    assert {p.device.type for e in kept.model.text_encoder_modules() for p in e.parameters()} == {"cpu"}
    assert {p.device.type for p in offloaded.model.denoiser.parameters()} == {"cpu"}
    assert [offloaded.train_step() for _ in range(2)] == [kept.train_step() for _ in range(2)]
    # unset: on for CUDA only, so this CPU run keeps them; a trained text encoder keeps them all
    default = build(*frozen, home="meta")
    assert {p.device.type for e in default.model.text_encoder_modules() for p in e.parameters()} == {"cpu"}
    # (with FLUX's CLIP trained, T5 stays too: its output is cached at the first step, not before)
    training = build("adapter.train_text_encoder=true", "train.offload_text_encoders=true", home="meta")
    assert {p.device.type for e in training.model.text_encoder_modules() for p in e.parameters()} == {"cpu"}


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux"])
def test_the_step_leaves_its_loss_on_the_device_and_the_log_reads_it_at_log_steps(plugins, scene, tmp_path, backbone):
    """``step_once`` returns the loss as a detached tensor (reading it would make the host wait for a GPU);
    ``fine_tune`` reads it only at log and checkpoint steps, and logs the losses ``train_step`` gives."""
    config = _config(plugins, "train.steps=5", "train.log_every=2", "train.checkpoint_every=0", backbone=backbone)
    eager = _trainer(plugins, config, scene)
    losses = [eager.train_step() for _ in range(5)]
    lazy = _trainer(plugins, config, scene)
    first = lazy.step_once()
    assert isinstance(first, torch.Tensor) and first.ndim == 0 and not first.requires_grad
    assert float(first) == losses[0]
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in log] == [(2, losses[1]), (4, losses[3]), (5, losses[4])]


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux"])
def test_the_vae_encodes_under_bf16_autocast_and_the_loss_stays_float32s(plugins, scene, backbone):
    """float32 weights under ``mixed_precision = "bf16"``: the VAE's convolutions run in bf16 (autocast),
    and the step's loss is the float32 one to bf16's precision; without autocast they stay float32."""
    dtypes = []

    def loss_and_vae_dtype(precision):
        config = _config(plugins, f"train.mixed_precision={precision}", backbone=backbone)
        trainer = _trainer(plugins, config, scene)
        conv = next(m for m in trainer.model.vae.encoder.modules() if isinstance(m, torch.nn.Conv2d))
        handle = conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
        trainer._set_train_mode(True)
        loss = trainer.loss(trainer.draw_batch())
        handle.remove()
        return float(loss), dtypes.pop()

    full, full_dtype = loss_and_vae_dtype("no")
    half, half_dtype = loss_and_vae_dtype("bf16")
    assert (full_dtype, half_dtype) == (torch.float32, torch.bfloat16)
    assert half == pytest.approx(full, rel=3e-2)


def test_channels_last_is_on_for_cuda_only_and_keeps_the_loss(plugins, scene):
    """``train.channels_last``: ``auto`` leaves a CPU run's weights as they are (its bytes stay); on, the UNet's
    and the VAE's convolution weights are channels-last and the loss is the same to float tolerance."""
    def run(setting):
        trainer = _trainer(plugins, _config(plugins, f"train.channels_last={setting}"), scene)
        trainer._set_train_mode(True)
        return trainer, float(trainer.loss(trainer.draw_batch()))

    auto, auto_loss = run('"auto"')
    on, on_loss = run("true")
    assert not auto.channels_last and on.channels_last
    for trainer, expected in ((auto, False), (on, True)):
        for module in (trainer.model.denoiser, trainer.model.vae):
            weight = next(m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d))
            assert weight.is_contiguous(memory_format=torch.channels_last) == expected
    assert on_loss == pytest.approx(auto_loss, rel=1e-5, abs=1e-7)


def test_full_adapter_loads_a_denoiser_file_saved_under_its_old_name(plugins, scene, tmp_path):
    """``full`` saves the denoiser as ``denoiser.safetensors``; an adapter folder from before (``unet.safetensors``)
    loads into a fresh model with the same weights."""
    config = _config(plugins, "train.steps=1", "train.checkpoint_every=0", adapter="full")
    model = plugins.registry("backbone").create(config.backbone).load()
    adapter = plugins.registry("adapter").create(config.adapter)
    fine_tune(model, adapter, plugins.registry("masking").create(config.masking), scene, config, tmp_path,
              compute=model_compute(model, config.train))
    folder = tmp_path / "adapter"
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["denoiser.safetensors"]
    (folder / "denoiser.safetensors").rename(folder / "unet.safetensors")
    fresh = plugins.registry("backbone").create(config.backbone).load()
    assert any(not torch.equal(a, b) for a, b in zip(fresh.denoiser.parameters(), model.denoiser.parameters()))
    adapter.load(fresh, folder)
    assert all(torch.equal(a, b) for a, b in zip(fresh.denoiser.parameters(), model.denoiser.parameters()))


@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-flux"])
def test_gradient_accumulation_equals_one_big_batch(plugins, scene, backbone):
    """k micro-batches of b: the same draws (crops, masks, prompt dropout, VAE posteriors, noise, timesteps)
    as one batch of k x b, and so the same loss and gradients to float tolerance; after 3 steps the same
    adapter. LoRA's own dropout is off: it draws from the global RNG inside each forward, so k forwards draw
    other masks than one (the same distribution, not the same numbers)."""
    big = _config(plugins, "train.batch_size=4", "adapter.dropout=0.0", backbone=backbone)
    small = _config(plugins, "train.batch_size=2", "train.gradient_accumulation_steps=2", "adapter.dropout=0.0",
                    backbone=backbone)
    one, two = _trainer(plugins, big, scene), _trainer(plugins, small, scene)
    batch_one, batch_two = one.draw_batch(), two.draw_batch()
    assert len(batch_two.images) == 4 and torch.equal(batch_one.masks, batch_two.masks)
    assert torch.equal(batch_one.drop_prompt, batch_two.drop_prompt)
    state = one.generator.get_state()
    assert torch.equal(state, two.generator.get_state())
    prepared = {name: t.prepare(b) for name, t, b in (("one", one, batch_one), ("two", two, batch_two))}
    for key in ("noise", "timesteps", "latents", "masked_latents"):  # the draws: noise and timesteps bit for bit
        torch.testing.assert_close(prepared["one"][key], prepared["two"][key], rtol=1e-5, atol=1e-6)
    one.generator.set_state(state)
    two.generator.set_state(state)

    def gradients(trainer, batch):
        trainer._set_train_mode(True)
        trainer.optimizer.zero_grad(set_to_none=True)
        shares = []
        for share in trainer.micro_losses(batch):
            share.backward()  # a backward per micro-batch, as the step does
            shares.append(float(share.detach()))
        return sum(shares), len(shares), [p.grad.clone() for p in trainer.params if p.grad is not None]

    loss_one, parts_one, grads_one = gradients(one, batch_one)
    loss_two, parts_two, grads_two = gradients(two, batch_two)
    assert (parts_one, parts_two) == (1, 2)
    assert loss_two == pytest.approx(loss_one, rel=1e-5)
    assert len(grads_one) == len(grads_two) > 0
    for a, b in zip(grads_one, grads_two):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)

    def adapter_after_steps(config):
        trainer = _trainer(plugins, config, scene)
        losses = [trainer.train_step() for _ in range(3)]
        return losses, trainer.trainable_state()

    (losses_one, adapter_one), (losses_two, adapter_two) = adapter_after_steps(big), adapter_after_steps(small)
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    assert adapter_one.keys() == adapter_two.keys()
    # AdamW divides by each gradient's own scale: where a gradient is near 0 (a LoRA A whose B starts at 0),
    # float rounding of the summed micro-batches moves its update by a little of lr (2e-4); measured at most
    # 4e-6 here, 2% of one step's update, while 3 steps move the weights by up to 6e-4
    for name in adapter_one:
        torch.testing.assert_close(adapter_two[name], adapter_one[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
