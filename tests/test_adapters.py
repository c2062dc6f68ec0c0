"""The peft adapters beside ``lora``: ``dora``, ``loha`` and ``lokr`` train on the denoiser (and, where the
family trains them, the text encoders) of tiny-sd2, tiny-sdxl and tiny-flux, save, and load back into a
fresh model that samples exactly what the trained one samples; their settings are bounded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from safetensors import safe_open

from realfill.device import model_compute
from realfill.diffusion import DENOISER_GROUP
from realfill.config import resolve_config
from realfill.errors import UserError
from realfill.run import load_trained
from realfill.sampling import sample_completions
from realfill.scene import load_scene
from realfill.training import fine_tune

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

#: the names each adapter's trained tensors carry (peft's)
TENSOR_NAMES = {"dora": ("lora_A", "lora_magnitude_vector"), "loha": ("hada_w1_a", "hada_w2_b"),
                "lokr": ("lokr_w1", "lokr_w2")}


@pytest.fixture(scope="module")
def scene(example_scene):
    return load_scene(example_scene)


def _adapter_tensors(module) -> dict:
    """The adapter's trained tensors of ``module``, named without the peft adapter name (``default``,
    ``default_0``: a model loaded with diffusers' load_lora_weights names its adapter ``default_0``)."""
    return {re.sub(r"\.default(_\d+)?", "", name): p.detach().clone() for name, p in module.named_parameters()
            if any(tag in name for tags in TENSOR_NAMES.values() for tag in tags)}


@pytest.mark.parametrize("adapter", ["dora", "loha", "lokr"])
@pytest.mark.parametrize("backbone", ["tiny-sd2", "tiny-sdxl", "tiny-flux"])
def test_trains_saves_and_reloads(plugins, scene, tmp_path, backbone, adapter):
    config = resolve_config(preset="smoke", components={"backbone": backbone, "adapter": adapter},
                            overrides=["train.steps=2", "train.batch_size=2", "train.resolution=32",
                                       "train.lr_denoiser=5e-3", "train.lr_text_encoder=5e-3"], plugins=plugins)
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    trained = {key: _adapter_tensors(module) for key, module in model.trainable_modules().items()}
    # the denoiser trains, and the text encoder(s) where the family trains them (FLUX's CLIP: yes, T5: never)
    assert all(trained[key] for key in trained), {k: len(v) for k, v in trained.items()}
    assert all(any(tag in name for name in trained[DENOISER_GROUP]) for tag in TENSOR_NAMES[adapter])

    fresh = load_trained(config, tmp_path, plugins=plugins, compute=model_compute(model, config.train))  # a fresh model with the saved adapter
    reloaded = {key: _adapter_tensors(module) for key, module in fresh.trainable_modules().items()}
    for key in trained:
        assert trained[key].keys() == reloaded[key].keys(), key
        assert all((trained[key][n] == reloaded[key][n]).all() for n in trained[key]), key

    kwargs = dict(prompt="a photo of sks", resolution=32, steps=2, num_samples=1, seed=0, scheduler="auto")
    ours = sample_completions(model, scene.target, scene.mask, **kwargs)[0]
    again = sample_completions(fresh, scene.target, scene.mask, **kwargs)[0]
    untuned = sample_completions(plugins.registry("backbone").create(config.backbone).load(), scene.target, scene.mask,
                                 **kwargs)[0]
    np.testing.assert_allclose(ours.astype(int), again.astype(int), atol=1)
    assert np.abs(ours.astype(int) - untuned.astype(int)).max() > 1  # two steps of the adapter change the samples


@pytest.mark.parametrize("adapter", ["loha", "lokr"])
def test_peft_files_hold_the_config_and_refuse_another_adapter(plugins, scene, tmp_path, adapter):
    config = resolve_config(preset="smoke", components={"adapter": adapter},
                            overrides=["train.steps=1", "train.batch_size=1", "train.resolution=32",
                                       "adapter.rank=4"], plugins=plugins)
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              tmp_path, plugins=plugins, compute=model_compute(model, config.train))
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["denoiser_peft.safetensors", "text_encoder_peft.safetensors"]
    with safe_open(str(tmp_path / "adapter" / "denoiser_peft.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert metadata["adapter"] == adapter and json.loads(metadata["peft_config"])["r"] == 4
    other = "lokr" if adapter == "loha" else "loha"
    with pytest.raises(UserError, match=f"holds adapter '{adapter}', not '{other}'"):
        plugins.registry("adapter").create(plugins.registry("adapter").get(other).Config()).load(
            plugins.registry("backbone").create(config.backbone).load(), tmp_path / "adapter")
    wider = config.adapter.model_copy(update={"rank": 8})
    with pytest.raises(UserError, match="does not fit backbone module"):
        plugins.registry("adapter").create(wider).load(plugins.registry("backbone").create(config.backbone).load(), tmp_path / "adapter")


@pytest.mark.parametrize(("adapter", "setting", "fragment"), [
    ("dora", "adapter.rank=0", "adapter.rank"),
    ("loha", "adapter.rank_dropout=1.0", "adapter.rank_dropout"),
    ("lokr", "adapter.decompose_factor=0", "adapter.decompose_factor"),
    ("lokr", "adapter.dropout=0.1", "adapter.dropout"),  # LoKr has no plain dropout: a typo is refused
])
def test_settings_are_bounded(plugins, adapter, setting, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        resolve_config(preset="smoke", components={"adapter": adapter}, overrides=[setting], plugins=plugins)
    assert "\n" not in str(info.value)
