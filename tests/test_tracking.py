"""Validation strips while training, the tracker role (TensorBoard, MLflow) and ``--tracker``'s errors.

The fill run is the issue's own check: ``realfill fill examples/motorcycle --preset smoke --steps 4
--set train.validation_steps=2 --tracker tensorboard``; TensorBoard's ``EventAccumulator`` reads it back.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from realfill.cli import main
from realfill.scene import read_rgb
from realfill.validation import strip_path, validation_strips
from tests.conftest import DummyEntryPoint

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tracking extra is not installed: pip install 'realfill[tracking]'")
needs_mlflow = pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("mlflow", "sqlalchemy", "alembic")),
                                  reason="the tracking extra is not installed: pip install 'realfill[tracking]'")


@pytest.mark.slow
@needs_tensorboard
def test_fill_writes_validation_strips_and_tensorboard_reads_them(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    strips = validation_strips(tracked_run)
    assert [step for step, _ in strips] == [2, 4]
    for _, path in strips:
        strip = read_rgb(path)
        assert strip.shape[0] > 16 and strip.shape[1] > 4 * strip.shape[0]  # four completions side by side
    # the same seeds at both steps: the known pixels agree, what training changed differs
    first, last = (read_rgb(p) for _, p in strips)
    assert first.shape == last.shape and not np.array_equal(first, last)
    logs = sorted((tracked_run / "tensorboard").iterdir())
    assert [p.name for p in logs] == [tracked_run.name]
    events = EventAccumulator(str(logs[0]), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4]
    logged = [json.loads(line) for line in (tracked_run / "train_log.jsonl").read_text().splitlines()]
    assert [e.value for e in loss] == pytest.approx([entry["loss"] for entry in logged])
    images = events.Images("validation")
    assert [e.step for e in images] == [2, 4]
    assert (images[0].width, images[0].height) == (first.shape[1], first.shape[0])
    assert "metrics/psnr_masked" in events.Tags()["scalars"]  # the final metrics of the comparison


def _tiny_training(tmp_path, name, **train):
    """fine_tune on tiny-sd2 and the example scene, returning the run folder and the losses logged."""
    from realfill.config import resolve_config
    from realfill.plugins import get_plugins
    from realfill.run import check_device, train_stage
    from realfill.scene import load_scene

    sets = [f"train.{key}={value}" for key, value in {"steps": 4, "log_every": 1, "threads": 1, **train}.items()]
    config = resolve_config(preset="smoke", overrides=[*sets, "sample.num_samples=2", "train.validation_images=2"])
    scene = load_scene("examples/motorcycle")
    out = tmp_path / name
    plugins = get_plugins()
    compute = check_device(config, plugins)
    return out, config, scene, lambda **kw: train_stage(scene, config, out, plugins=plugins, compute=compute, **kw)


@pytest.mark.slow
def test_validation_changes_nothing_training_does_and_a_resume_keeps_earlier_strips(tmp_path, monkeypatch):
    """Training with validation on draws the same batches and reaches the same weights as with it off
    (validation sampling leaves every RNG as it found it); a run killed after step 3 and resumed keeps the
    strip of step 2 (not rewritten) and writes step 4's, equal to an unbroken run's."""
    from realfill import training

    plain, _, _, train_plain = _tiny_training(tmp_path, "plain")
    train_plain()
    checked, _, _, train_checked = _tiny_training(tmp_path, "checked", validation_steps=2)
    train_checked()
    losses = [json.loads(line)["loss"] for line in (plain / "train_log.jsonl").read_text().splitlines()]
    assert [json.loads(line)["loss"] for line in (checked / "train_log.jsonl").read_text().splitlines()] == losses
    assert (plain / "adapter").is_dir() and [s for s, _ in validation_strips(checked)] == [2, 4]
    assert not (plain / "validation").exists()

    killed, _, _, train_killed = _tiny_training(tmp_path, "killed", validation_steps=2, checkpoint_every=2)

    def stop_at_3(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    original = training.fine_tune
    monkeypatch.setattr(training, "fine_tune", lambda *a, **kw: original(*a, **{**kw, "on_step": stop_at_3}))
    import realfill.run as run_module

    monkeypatch.setattr(run_module, "fine_tune", training.fine_tune)
    with pytest.raises(KeyboardInterrupt):
        train_killed()
    monkeypatch.setattr(run_module, "fine_tune", original)
    second = strip_path(killed, 2)
    before = (second.stat().st_ino, second.stat().st_mtime_ns)
    assert not strip_path(killed, 4).exists()
    train_killed(resume=True)
    assert (second.stat().st_ino, second.stat().st_mtime_ns) == before  # not redone
    assert np.array_equal(read_rgb(strip_path(killed, 4)), read_rgb(strip_path(checked, 4)))


@pytest.mark.slow
@needs_mlflow
def test_train_logs_to_mlflow_offline(tmp_path, example_scene):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    assert main(["train", str(example_scene), "--preset", "smoke", "--steps", "2", "--set", "train.validation_steps=1",
                 "--set", "train.validation_images=2", "--tracker", "mlflow", "--out", str(out)]) == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("realfill")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == out.name and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert run.data.params["train.validation_steps"] == "1"
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert sum(p.endswith(".png") and "validation" in p for p in images) >= 2
    assert (out / "report.html").is_file()


def _one_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()
             and not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["fill", "train", "ablate"])
def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(command, fake_entry_points, capsys, tmp_path,
                                                                      example_scene):
    fake_entry_points(DummyEntryPoint("absent-tracker", "absent_tracker"))
    out = tmp_path / "out"
    code = main([command, str(example_scene), "--preset", "smoke", "--tracker", "absent", "--out", str(out)])
    line = _one_line(capsys)
    assert code == 2
    assert "--tracker absent" in line and "realfill_no_such_package" in line and "pip install 'realfill[tracking]'" in line
    assert not out.exists()  # nothing was written


def test_an_unknown_tracker_lists_the_known_ones(capsys, tmp_path, example_scene):
    code = main(["fill", str(example_scene), "--preset", "smoke", "--tracker", "tensorbord", "--out", str(tmp_path / "o")])
    line = _one_line(capsys)
    assert code == 2 and "unknown tracker 'tensorbord'" in line and "did you mean 'tensorboard'" in line
    assert "mlflow" in line


def test_a_tracker_that_raises_is_dropped_and_the_run_goes_on(tmp_path, plugins, capsys):
    """An observer's failure is a warning, not the run's end (as any lifecycle observer's)."""
    from realfill.components import ComponentConfig, Tracker
    from realfill.tracking import Trackers, TrackerWarning

    calls = []

    class Flaky(Tracker):
        name = "flaky"

        class Config(ComponentConfig):
            name: str = "flaky"

        def start(self, directory, run_name, config):
            calls.append(("start", run_name))

        def log_scalars(self, values, step):
            raise OSError("disk gone")

        def finish(self):
            calls.append("finish")

    trackers = Trackers((), plugins)
    trackers.active = [Flaky()]
    trackers.start(tmp_path, "r", {})
    with pytest.warns(TrackerWarning, match="tracker 'flaky' raised in log_scalars"):
        plugins.train_step_end(step=1, loss=0.5, learning_rates={"unet": 1e-4}, seconds=0.1)
    trackers.close()
    assert calls == [("start", "r")] and trackers.active == []
    assert "warning: tracker 'flaky' raised in log_scalars (OSError: disk gone)" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
