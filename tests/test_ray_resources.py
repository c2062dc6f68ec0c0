"""``realfill ablate --executor ray`` on a GPU cluster: training and sampling ask Ray for one GPU where the run's
device is a GPU (or ``auto`` on a cluster with GPUs), ranking and evaluation ask for a CPU only, and
``--ray-resources`` overrides any stage. Ray schedules by declared counts, so a local instance that declares
a GPU it does not have shows what the tasks ask for and what Ray gives them; the stages themselves run on
the CPU (``device = "auto"`` finds no CUDA here)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from realfill.ablation import Configuration, RayExecutor, build_plan, parse_ray_resources, run_ablation
from realfill.errors import UserError
from realfill.tui import PlainReporter

SMALL = ["train.steps=2", "train.batch_size=2", "train.resolution=32", "train.checkpoint_every=0", "train.threads=1",
         "sample.steps=2", "sample.num_samples=2", "sample.batch_size=2"]


@pytest.mark.slow
def test_training_and_sampling_ask_for_a_gpu_and_ranking_does_not(example_scene, tmp_path, plugins):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'realfill[ray]')")
    plan = build_plan([example_scene], [Configuration("sift", ['ranker.name="sift"'])], tmp_path, preset="smoke",
                      overrides=SMALL, plugins=plugins)
    executor = RayExecutor(num_cpus=2, num_gpus=1)  # one declared GPU: Ray runs the GPU stages one at a time
    try:
        assert executor.cluster_gpus() == 1
        outcome = run_ablation(plan, executor, PlainReporter(Console(file=io.StringIO())), metrics=["psnr"])
    finally:
        executor.close()
    assert not outcome.failed and len(outcome.rows) == 1
    kinds = {task_id.split(":")[0] for task_id in executor.requests}
    assert kinds == {"train", "sample", "run"}
    for task_id, wanted in executor.requests.items():
        got = executor.assigned[task_id]
        if task_id.startswith(("train:", "sample:")):
            assert wanted == {"num_cpus": 1, "num_gpus": 1} and got.get("GPU") == 1.0, (task_id, got)
        else:
            assert wanted == {"num_cpus": 1} and "GPU" not in got, (task_id, got)


def test_the_request_follows_the_device_and_the_overrides():
    executor = RayExecutor.__new__(RayExecutor)  # no cluster needed to decide a request
    executor.cluster_gpus = lambda: 0.0
    executor.resources = {}
    cuda = {"kind": "train", "config": {"device": "cuda"}}
    assert executor.stage_resources(cuda) == {"num_cpus": 1, "num_gpus": 1}  # even where none is declared yet
    assert executor.stage_resources({"kind": "sample", "config": {"device": "auto"}}) == {"num_cpus": 1}
    assert executor.stage_resources({"kind": "train", "config": {"device": "cpu"}}) == {"num_cpus": 1}
    assert executor.stage_resources({"kind": "run", "config": {"device": "cuda"}}) == {"num_cpus": 1}
    executor.resources = parse_ray_resources(["train.num_gpus=0.5", "train.num_cpus=4", "rank.memory=2e9"])
    assert executor.stage_resources(cuda) == {"num_cpus": 4, "num_gpus": 0.5}
    assert executor.stage_resources({"kind": "run"}) == {"num_cpus": 1, "memory": 2000000000}


@pytest.mark.parametrize("item", ["train.gpus=1", "train=1", "eval.num_gpus=1", "train.num_gpus=-1", "x"])
def test_a_bad_resource_override_is_one_line(item):
    with pytest.raises(UserError, match="--ray-resources"):
        parse_ray_resources([item])


def test_the_ray_flags_need_the_ray_executor(example_scene, capsys):
    from realfill.cli import main

    assert main(["ablate", str(example_scene), "--baselines-only", "--baseline", "telea", "--ray-gpus", "1",
                 "--no-tui"]) == 2
    assert "--ray-gpus and --ray-resources are for --executor ray" in capsys.readouterr().err
