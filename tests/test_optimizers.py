"""``train.optimizer``: Prodigy and torchao's 8-bit AdamW train, checkpoint and resume exactly as AdamW does
(the optimizer state back byte for byte); switching to Prodigy sets its learning rates to 1.0; a missing
package is one line naming the extra."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from safetensors.torch import load_file

from realfill.device import model_compute
from realfill.diffusion import DENOISER_GROUP
from realfill.checkpoints import load_checkpoint
from realfill.cli import main
from realfill.config import resolve_config
from realfill.scene import load_scene
from realfill.training import Trainer, fine_tune

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def scene(example_scene):
    return load_scene(example_scene)


def _config(plugins, *overrides):
    return resolve_config(preset="smoke", overrides=["train.resolution=32", "train.batch_size=2", *overrides],
                          plugins=plugins)


class _Kill:
    def __init__(self, at):
        self.at = at

    def realfill_train_step_end(self, step):
        if step == self.at:
            raise KeyboardInterrupt


def _bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(("optimizer", "kind"), [("prodigy", "Prodigy"), ("adamw-8bit", "AdamW8bit")])
def test_killed_and_resumed_equals_straight(plugins, scene, tmp_path, optimizer, kind):
    config = _config(plugins, f"train.optimizer={optimizer}", "train.steps=5", "train.checkpoint_every=2",
                     "train.log_every=1")

    def run(directory, resume=False):
        model = plugins.registry("backbone").create(config.backbone).load()
        return fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking),
                         scene, config, directory, plugins=plugins, resume=resume,
                         compute=model_compute(model, config.train))

    straight = run(tmp_path / "straight")
    assert type(straight.optimizer).__name__ == kind
    kill = _Kill(at=3)  # after the checkpoint at step 2
    plugins.register(kill, name="kill")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed")
    plugins.pm.unregister(kill)
    state = load_checkpoint(tmp_path / "killed")
    assert state["step"] == 2 and state["optimizer"]["state"]

    # the checkpoint's optimizer state goes into a fresh trainer and comes out byte for byte
    model = plugins.registry("backbone").create(config.backbone).load()
    fresh = Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene,
                    config.train, seed=config.seed, compute=model_compute(model, config.train))
    fresh.load_state_dict(state)
    assert _bytes(fresh.optimizer.state_dict()) == _bytes(state["optimizer"])

    resumed = run(tmp_path / "killed", resume=True)
    a = load_file(tmp_path / "straight" / "adapter" / "pytorch_lora_weights.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _bytes(resumed.optimizer.state_dict()) == _bytes(straight.optimizer.state_dict())


def test_prodigy_takes_learning_rate_one_unless_given(plugins):
    config = _config(plugins, "train.optimizer=prodigy")
    assert (config.train.lr_denoiser, config.train.lr_text_encoder) == (1.0, 1.0)
    config = _config(plugins, "train.optimizer=prodigy", "train.lr_denoiser=0.5")
    assert (config.train.lr_denoiser, config.train.lr_text_encoder) == (0.5, 1.0)
    assert _config(plugins).train.lr_denoiser == 2e-4  # AdamW keeps the paper's rates


def test_prodigy_estimates_a_step_size_and_trains(plugins, scene):
    config = _config(plugins, "train.optimizer=prodigy")
    model = plugins.registry("backbone").create(config.backbone).load()
    trainer = Trainer(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene,
                      config.train, seed=config.seed, compute=model_compute(model, config.train))
    before = {k: v.clone() for k, v in trainer.trainable_state().items()}
    for _ in range(3):
        trainer.train_step()
    after = trainer.trainable_state()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == 1.0
    # what the log records is the step size Prodigy uses: its estimate d times the rate, not the bare 1.0
    assert trainer.learning_rates()[DENOISER_GROUP] == group["d"] * 1.0 < 1e-3


def test_a_missing_optimizer_package_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # how Python marks a module as not importable
    code = main(["config", "--preset", "smoke", "--set", "train.optimizer=prodigy"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "prodigyopt" in lines[0] and "realfill[prodigy]" in lines[0]
