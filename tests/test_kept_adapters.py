"""``train.keep_adapters``: the adapter of each checkpoint step is kept as ``adapter/step-NNNNN/`` (bounded by
``train.checkpoints_total_limit``) and is the adapter a run of that many steps ends with; ``realfill sample
--step N`` samples from one; an ablation over ``train.steps`` trains once and samples each step's adapter;
and three adapters make three runs of one ablation."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from realfill.device import model_compute
from realfill.cli import main
from realfill.config import resolve_config, write_config
from realfill.scene import load_scene
from realfill.training import fine_tune
from tests.conftest import record_scene

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LORA = "pytorch_lora_weights.safetensors"
TINY = ["train.batch_size=2", "train.resolution=32", "train.log_every=1"]


def _train(plugins, scene, directory, *overrides, snapshot_steps=()):
    config = resolve_config(preset="smoke", overrides=[*TINY, *overrides], plugins=plugins)
    model = plugins.registry("backbone").create(config.backbone).load()
    fine_tune(model, plugins.registry("adapter").create(config.adapter), plugins.registry("masking").create(config.masking), scene, config,
              directory, plugins=plugins, snapshot_steps=snapshot_steps,
              compute=model_compute(model, config.train))
    write_config(config, directory / "config.toml")
    return config


def test_kept_adapters_are_the_adapters_of_shorter_runs(plugins, example_scene, tmp_path, capsys):
    scene = load_scene(example_scene)
    _train(plugins, scene, tmp_path / "long", "train.steps=4", "train.checkpoint_every=1", "train.keep_adapters=true",
           "train.checkpoints_total_limit=1", snapshot_steps=[1])
    record_scene(tmp_path / "long", example_scene)  # as fill and train do: sample checks the folder's scene
    kept = sorted(p.name for p in (tmp_path / "long" / "adapter").glob("step-*"))
    # checkpoints at 1, 2, 3 (4 is the final adapter/); the limit keeps the newest one, and step 1 is pinned
    assert kept == ["step-00001", "step-00003"]
    assert (tmp_path / "long" / "adapter" / LORA).is_file()
    _train(plugins, scene, tmp_path / "short", "train.steps=3", "train.checkpoint_every=1")
    a = load_file(tmp_path / "long" / "adapter" / "step-00003" / LORA)
    b = load_file(tmp_path / "short" / "adapter" / LORA)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same bytes' tensors
    final = load_file(tmp_path / "long" / "adapter" / LORA)
    assert not all(torch.equal(a[k], final[k]) for k in a)  # a real snapshot, not the final adapter again

    def sample(step, out):
        return main(["sample", str(example_scene), "--run", str(tmp_path / "long"), "--step", str(step),
                     "--out", str(out), "--set", "sample.steps=2", "--set", "sample.num_samples=1"])

    assert sample(3, tmp_path / "at3") == 0 and (tmp_path / "at3" / "samples" / "000.png").is_file()
    assert sample(4, tmp_path / "at4") == 0  # the last step: adapter/ itself
    assert (tmp_path / "at3" / "samples" / "000.png").read_bytes() != (tmp_path / "at4" / "samples" / "000.png").read_bytes()
    capsys.readouterr()
    assert sample(2, tmp_path / "at2") == 2  # pruned by checkpoints_total_limit
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no adapter kept at step 2 (kept: 1, 3, 4)" in err[0]


SMOKE = ["--set", "train.batch_size=2", "--set", "train.resolution=32", "--set", "train.checkpoint_every=0",
         "--set", "train.threads=1", "--set", "sample.steps=2", "--set", "sample.batch_size=2", "--samples", "2",
         "--metric", "psnr", "--no-tui"]


def test_an_ablation_over_steps_trains_once_with_kept_adapters(example_scene, tmp_path, capsys):
    code = main(["ablate", str(example_scene), "--preset", "smoke", "--steps", "1", "--steps", "3", "--set",
                 "train.keep_adapters=true", "--out", str(tmp_path), *SMOKE])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "(steps 1, 3 from one training)" in out.err + out.out
    assert "ran 1 train, 2 sample" in out.err + out.out
    trainings = list((tmp_path / "stages" / "train").iterdir())
    assert len(trainings) == 1
    assert json.loads((trainings[0] / "done.json").read_text())["snapshot_steps"] == [1, 3]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    samples = sorted((tmp_path / "stages" / "sample").glob("*/samples/000.png"))
    assert len(samples) == 2 and samples[0].read_bytes() != samples[1].read_bytes()
    # without keep_adapters each steps value trains on its own, as before
    code = main(["ablate", str(example_scene), "--preset", "smoke", "--steps", "1", "--steps", "2",
                 "--out", str(tmp_path / "plain"), *SMOKE])
    assert code == 0 and "ran 2 train" in "".join(capsys.readouterr())


def test_three_adapters_make_three_runs(example_scene, tmp_path, capsys):
    code = main(["ablate", str(example_scene), "--preset", "smoke", "--adapter", "lora", "--adapter", "dora",
                 "--adapter", "lokr", "--steps", "2", "--out", str(tmp_path), *SMOKE])
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert sorted(r["adapter"] for r in rows) == ["dora", "lokr", "lora"] and {r["status"] for r in rows} == {"ok"}
