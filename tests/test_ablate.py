"""``realfill ablate``: the issue's checks (2 rankers x 2 scenes on the smoke preset: 4 rows, one fine-tune per
scene, a second identical command skips everything; Ray gives the same metrics), plus resuming, failures,
sweep files, the reports and the terminal UI. Runs of the image baselines exercise the engine whatever
else is installed; the smoke ablation needs the fill pipeline (realfill.run) and the tiny backbone."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from skimage import data

from realfill.ablation import (
    Configuration,
    LocalExecutor,
    build_plan,
    product_configurations,
    read_sweep,
    run_ablation,
)
from realfill.cli import main
from realfill.tui import LiveReporter, PlainReporter, make_reporter

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SETTINGS = [
    "--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "train.resolution=32",
    "--set", "train.checkpoint_every=0", "--set", "train.threads=1",
    "--set", "sample.steps=2", "--set", "sample.num_samples=2", "--set", "sample.batch_size=2",
]
PIXEL_METRICS = ["--metric", "psnr", "--metric", "ssim", "--metric", "ms-ssim"]


def write_scene(root: Path, target: np.ndarray, mask: np.ndarray, gt: np.ndarray | None, refs: list[np.ndarray]) -> Path:
    (root / "ref").mkdir(parents=True)
    (root / "target").mkdir()
    for i, ref in enumerate(refs):
        Image.fromarray(ref).save(root / "ref" / f"ref{i}.png")
    Image.fromarray(target).save(root / "target" / "target.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "target" / "mask.png")
    if gt is not None:
        Image.fromarray(gt).save(root / "target" / "gt.png")
    return root


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, example_scene) -> list[Path]:
    """The bundled motorcycle scene and a second real photo (coffee) seen by a reference under a homography."""
    root = tmp_path_factory.mktemp("scenes")
    gt = data.coffee()[::2, ::2].copy()  # 200 x 300
    h, w = gt.shape[:2]
    homography = np.array([[0.92, -0.1, 30.0], [0.08, 0.95, 12.0], [1e-4, 0.0, 1.0]])
    reference = cv2.warpPerspective(gt, homography, (w + 40, h + 30), flags=cv2.INTER_CUBIC)
    mask = np.zeros((h, w), bool)
    mask[:, int(w * 0.7):] = True
    target = gt.copy()
    target[mask] = 0
    coffee = write_scene(root / "coffee", target, mask, gt, [reference])
    return [example_scene, coffee]


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def ablate(*args: str) -> int:
    return main(["ablate", *map(str, args), "--no-tui"])


# -- the engine on the image baselines (no fill pipeline needed) ---------------------------------------


BASELINES = [Configuration("telea", baseline="telea"), Configuration("geometric", baseline="geometric")]


@pytest.mark.slow
def test_baseline_ablation_writes_results_and_a_second_run_skips_everything(scenes, tmp_path, plugins):
    out = tmp_path / "abl"
    plan = build_plan(scenes, BASELINES, out, plugins=plugins)
    first = run_ablation(plan, LocalExecutor(), PlainReporter(Console(file=io.StringIO())), metrics=["psnr", "ssim"])
    assert first.ran["run"] == 4 and not first.failed
    rows = read_csv(out / "results.csv")
    assert [(r["scene"], r["configuration"]) for r in rows] == [
        ("motorcycle", "telea"), ("motorcycle", "geometric"), ("coffee", "telea"), ("coffee", "geometric")]
    assert all(float(r["psnr_masked"]) > 5 and r["status"] == "ok" for r in rows)
    by = {(r["scene"], r["configuration"]): float(r["psnr_masked"]) for r in rows}
    assert by[("coffee", "geometric")] > by[("coffee", "telea")] + 5  # the reference shows the hole
    report = (out / "report.md").read_text()
    assert "| telea | 2/2 |" in report and "| geometric | 2/2 |" in report and "±" in report
    chart = Image.open(out / "chart.png")
    assert chart.format == "PNG" and chart.width >= 300
    for row in rows:
        assert (out / row["run_dir"] / "contact_sheet.png").is_file()
        assert json.loads((out / row["run_dir"] / "metrics.json").read_text())["values"]["psnr_masked"] == pytest.approx(
            float(row["psnr_masked"]))

    log = io.StringIO()
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.png")}
    second = run_ablation(plan, LocalExecutor(), PlainReporter(Console(file=log, width=200)), metrics=["psnr", "ssim"])
    assert second.ran["run"] == 0 and second.skipped["run"] == 4
    assert "skipped 4 finished runs" in log.getvalue()
    assert read_csv(out / "results.csv") == rows
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/result.png")} == mtimes  # nothing was redone


def test_a_killed_run_is_redone_and_only_it(scenes, tmp_path, plugins):
    out = tmp_path / "abl"
    plan = build_plan(scenes, BASELINES, out, plugins=plugins)
    reporter = PlainReporter(Console(file=io.StringIO()))
    run_ablation(plan, LocalExecutor(), reporter, metrics=["psnr"])
    killed = plan.runs[1].run_dir
    (killed / "done.json").unlink()  # as if the process died before marking it finished
    (killed / "result.png").write_bytes(b"half-written")
    again = run_ablation(plan, LocalExecutor(), reporter, metrics=["psnr"])
    assert again.ran["run"] == 1 and again.skipped["run"] == 3 and not again.failed
    assert Image.open(killed / "result.png").size == (370, 250)


def test_a_failing_run_is_recorded_and_the_others_go_on(scenes, tmp_path, plugins):
    broken = tmp_path / "broken"
    shutil.copytree(scenes[0], broken)
    out = tmp_path / "abl"
    plan = build_plan([broken, scenes[1]], BASELINES[:1], out, plugins=plugins)
    (broken / "target" / "target.png").write_bytes(b"broken after planning")  # the run fails, the other goes on
    outcome = run_ablation(plan, LocalExecutor(), PlainReporter(Console(file=io.StringIO())), metrics=["psnr"])
    assert [r["status"] for r in outcome.rows] == ["failed", "ok"]
    assert "not a readable image" in outcome.rows[0]["error"]
    error = json.loads((plan.runs[0].run_dir / "error.json").read_text())
    assert "not a readable image" in error["error"]
    rows = read_csv(out / "results.csv")
    assert rows[0]["status"] == "failed" and "not a readable image" in rows[0]["error"]
    assert "failed: " in (out / "report.md").read_text()
    # the failure is not "finished": the next invocation tries it again, and skips the good one
    again = run_ablation(plan, LocalExecutor(), PlainReporter(Console(file=io.StringIO())), metrics=["psnr"])
    assert again.ran["run"] == 1 and again.skipped["run"] == 1


def _pipeline_available(plugins) -> bool:
    try:
        _pipeline_or_skip(plugins)
    except pytest.skip.Exception:
        return False
    return True


def test_ray_gives_the_same_metrics_as_local_on_the_baselines(scenes, tmp_path, plugins):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'realfill[ray]')")
    if _pipeline_available(plugins):  # one Ray start-up is enough on two shared cores
        pytest.skip("covered by test_smoke_ablation_through_ray_gives_the_same_metrics, which includes the baselines")
    from realfill.ablation import RayExecutor

    metrics = ["psnr", "ssim", "ms-ssim"]
    local = run_ablation(build_plan(scenes, BASELINES, tmp_path / "local", plugins=plugins), LocalExecutor(),
                         PlainReporter(Console(file=io.StringIO())), metrics=metrics)
    executor = RayExecutor(num_cpus=2)
    try:
        assert ray.is_initialized()
        remote = run_ablation(build_plan(scenes, BASELINES, tmp_path / "ray", plugins=plugins), executor,
                              PlainReporter(Console(file=io.StringIO())), metrics=metrics)
    finally:
        executor.close()
    assert not remote.failed and len(remote.rows) == 4
    for a, b in zip(local.rows, remote.rows, strict=True):
        assert (a["scene"], a["configuration"]) == (b["scene"], b["configuration"])
        assert a["metrics"] == pytest.approx(b["metrics"], abs=1e-9)


# -- configurations, sweep files, bad input -----------------------------------------------------------


def test_repeated_flags_make_a_cartesian_product():
    configs = product_configurations({"ranker.name": ["sift", "loftr"], "sample.steps": [2, 4], "seed": [0]})
    assert [c.label for c in configs] == ["ranker=sift,sample.steps=2", "ranker=sift,sample.steps=4",
                                           "ranker=loftr,sample.steps=2", "ranker=loftr,sample.steps=4"]
    assert configs[1].overrides == ['ranker.name="sift"', "sample.steps=4", "seed=0"]


def test_sweep_file_axes_and_runs(tmp_path):
    product = tmp_path / "product.toml"
    product.write_text('preset = "smoke"\nset = ["train.steps=2"]\n[axes]\nranker = ["sift", "lightglue"]\n'
                       '"sample.steps" = [2, 3]\n')
    base, configs = read_sweep(product)
    assert base == {"preset": "smoke", "set": ["train.steps=2"]} and len(configs) == 4
    listed = tmp_path / "list.toml"
    listed.write_text('[[run]]\nlabel = "paper-ranker"\nranker = "loftr"\n[[run]]\nranker = "sift"\n'
                      '[run.sample]\nsteps = 5\n')
    _, configs = read_sweep(listed)
    assert [c.label for c in configs] == ["paper-ranker", "ranker=sift,sample.steps=5"]
    assert configs[1].overrides == ['ranker.name="sift"', "sample.steps=5"]


@pytest.mark.parametrize(
    "sweep,fragment",
    [
        ("[axes]\nranker = []\n", "axes.ranker is an empty list"),
        ("[[run]]\nranker = 'sift'\n[axes]\nseed = [1]\n", "exactly one of [axes]"),
        ("presett = 'smoke'\n[axes]\nseed = [1]\n", "unknown sweep key(s) presett"),
        ("[axes\n", "not a valid TOML file"),
    ],
)
def test_bad_sweep_files_are_one_line_errors(sweep, fragment, tmp_path, scenes, capsys):
    path = tmp_path / "sweep.toml"
    path.write_text(sweep)
    assert ablate(scenes[0], "--sweep", path, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--baseline", "lama"], "--baseline lama: unknown baseline; known baselines: backbone-untuned, flux-kontext, flux2-klein, geometric, in-context, multi-homography, qwen-edit-plus, telea, tiny-flux-kontext, tiny-flux2-klein"),
        (["--matcher", "sift", "--matcher", "sift"], "--matcher: a value is given twice"),
        (["--address", "127.0.0.1:1"], "--address is for --executor ray"),
        (["--metric", "psnrr"], "unknown metric 'psnrr'"),
    ],
)
def test_bad_ablate_input_is_one_line_exit_2(args, fragment, scenes, tmp_path, capsys):
    assert ablate(scenes[0], *args, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_unknown_ranker_is_a_user_error(scenes, tmp_path, plugins, capsys):
    missing = [role.name for role in plugins.config_roles if not len(plugins.registry(role.name))]
    if missing:
        pytest.skip(f"no {', '.join(missing)} component is registered yet, so no run config validates")
    assert ablate(scenes[0], "--preset", "smoke", "--matcher", "sift", "--matcher", "nope", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "unknown ranker 'nope'" in err and "known rankers:" in err and "Traceback" not in err


def test_baselines_only_from_the_command_line(scenes, tmp_path, capsys):
    out = tmp_path / "abl"
    assert ablate(*scenes, "--baselines-only", "--baseline", "telea", "--metric", "psnr", "--out", out) == 0
    rows = read_csv(out / "results.csv")
    assert [(r["scene"], r["method"], r["status"]) for r in rows] == [("motorcycle", "telea", "ok"), ("coffee", "telea", "ok")]
    assert "finished: 2 runs, 0 failed" in capsys.readouterr().err
    assert ablate(scenes[0], "--baselines-only", "--baseline", "telea", "--matcher", "sift", "--out", out) == 2
    assert "--baselines-only: give only image baselines" in capsys.readouterr().err


def test_unreachable_ray_address_is_a_user_error(scenes, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'realfill[ray]')")
    import socket

    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert ablate(scenes[0], "--baselines-only", "--baseline", "telea", "--executor", "ray",
                  "--address", f"127.0.0.1:{port}", "--out", tmp_path / "o") == 2
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers there" in capsys.readouterr().err


def test_missing_scene_is_a_user_error(tmp_path, capsys):
    assert ablate(tmp_path / "nowhere", "--out", tmp_path / "o") == 2
    assert "no such scene folder" in capsys.readouterr().err


# -- the terminal UI ---------------------------------------------------------------------------------


def test_live_ui_shows_header_progress_stages_and_results(scenes, tmp_path, plugins):
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, color_system=None)
    reporter = make_reporter(console, plugins, tui=True)
    assert isinstance(reporter, LiveReporter)
    plan = build_plan(scenes, BASELINES, tmp_path / "abl", plugins=plugins)
    with reporter:
        run_ablation(plan, LocalExecutor(), reporter, metrics=["psnr"])
    screen = buffer.getvalue()
    assert "realfill ablate" in screen and "built-in plugins" in screen and "executor local" in screen
    assert "runs" in screen and "4/4" in screen
    assert "results" in screen and "psnr_masked" in screen and "geometric" in screen
    assert "finished: 4 runs, 0 failed" in screen


def test_plain_lines_when_not_a_terminal_or_no_tui(plugins):
    assert isinstance(make_reporter(Console(file=io.StringIO()), plugins, tui=True), PlainReporter)
    assert not isinstance(make_reporter(Console(file=io.StringIO()), plugins, tui=True), LiveReporter)
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert not isinstance(make_reporter(terminal, plugins, tui=False), LiveReporter)


# -- the checks on the smoke preset (needs the fill pipeline) -----------------------------------


def _pipeline_or_skip(plugins):
    try:
        import realfill.run  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the fill pipeline realfill.run is not importable yet ({exc})")
    if "tiny-sd2" not in plugins.registry("backbone"):
        pytest.skip("the tiny-sd2 backbone (smoke preset) is not registered")
    for ranker in ("sift", "lightglue"):
        if ranker not in plugins.registry("ranker"):
            pytest.skip(f"the {ranker} ranker is not registered")


@pytest.mark.slow
def test_smoke_ablation_two_rankers_two_scenes(scenes, tmp_path, plugins, capsys):
    _pipeline_or_skip(plugins)
    out = tmp_path / "abl"
    argv = [*scenes, "--preset", "smoke", "--matcher", "sift", "--matcher", "lightglue", *SMOKE_SETTINGS,
            *PIXEL_METRICS, "--out", out]
    assert ablate(*argv) == 0, capsys.readouterr().err
    rows = read_csv(out / "results.csv")
    assert len(rows) == 4 and {r["ranker"] for r in rows} == {"sift", "lightglue"}
    assert all(r["status"] == "ok" and float(r["psnr_masked"]) > 0 for r in rows)
    assert len(list((out / "stages" / "train").iterdir())) == 2  # one fine-tune per scene
    assert len(list((out / "stages" / "sample").iterdir())) == 2  # sampled once, ranked twice
    for scene in ("motorcycle", "coffee"):
        mine = [r for r in rows if r["scene"] == scene]
        assert float(mine[0]["train_s"]) == float(mine[1]["train_s"])  # the same stage record
        # seed selection: both rankers chose from the same samples, so the same samples' mean
        assert mine[0]["samples_mean_psnr_masked"] == mine[1]["samples_mean_psnr_masked"] != ""
        for row in mine:  # the result is the pick
            assert float(row["pick_psnr_masked"]) == pytest.approx(float(row["psnr_masked"]))
            assert (float(row["pick_psnr_masked"]) > float(row["samples_mean_psnr_masked"])) == (
                row["pick_beats_mean"] == "True")
            assert 1 <= int(row["pick_place"]) <= 4
    report = (out / "report.md").read_text()
    assert "## Seed selection" in report and "| ranker=sift | " in report.split("## Seed selection")[1]
    capsys.readouterr()
    assert ablate(*argv) == 0  # how much faster it is: benchmarks/test_ablate_resume.py
    err = capsys.readouterr().err
    assert "ran 0 train, 0 sample, 0 rank stages; skipped 4 finished runs" in err
    assert read_csv(out / "results.csv") == rows


@pytest.mark.slow
def test_smoke_ablation_through_ray_gives_the_same_metrics(scenes, tmp_path, plugins):
    _pipeline_or_skip(plugins)
    pytest.importorskip("ray", reason="ray is not installed (pip install 'realfill[ray]')")
    argv = [*scenes, "--preset", "smoke", "--matcher", "sift", "--matcher", "lightglue", "--baseline", "telea",
            "--baseline", "geometric", *SMOKE_SETTINGS, *PIXEL_METRICS]
    assert ablate(*argv, "--out", tmp_path / "local") == 0
    assert ablate(*argv, "--out", tmp_path / "ray", "--executor", "ray", "--ray-cpus", "2") == 0
    local, remote = read_csv(tmp_path / "local" / "results.csv"), read_csv(tmp_path / "ray" / "results.csv")
    assert len(local) == len(remote) == 8 and all(r["status"] == "ok" for r in remote)
    for a, b in zip(local, remote, strict=True):
        for metric in ("psnr_masked", "ssim_masked", "ms_ssim_masked", "psnr", "ssim"):
            assert float(a[metric]) == pytest.approx(float(b[metric]), abs=1e-6), (a["configuration"], metric)


class RecordingReporter(PlainReporter):
    """Plain lines, plus every progress call the engine makes (what the live UI's stage bars show)."""

    def __init__(self):
        super().__init__(Console(file=io.StringIO()))
        self.progress: list[tuple[str, int, int]] = []

    def stage_progress(self, stage_id, done, total):
        self.progress.append((stage_id, done, total))


@pytest.mark.slow
def test_untuned_backbone_baseline_and_live_training_progress(scenes, tmp_path, plugins):
    _pipeline_or_skip(plugins)
    from realfill.commands.ablate import configurations_from_args
    from realfill.cli import build_parser

    args = build_parser().parse_args(["ablate", str(scenes[0]), "--preset", "smoke", "--baseline", "backbone-untuned",
                                      *map(str, SMOKE_SETTINGS)])
    base, configurations = configurations_from_args(args, plugins)
    assert [c.label for c in configurations] == ["base", "backbone-untuned"]
    plan = build_plan([scenes[0]], configurations, tmp_path / "abl", preset=base["preset"], overrides=base["set"],
                      plugins=plugins)
    reporter = RecordingReporter()
    outcome = run_ablation(plan, LocalExecutor(), reporter, metrics=["psnr"], plugins=plugins)
    assert not outcome.failed and outcome.ran == {"train": 2, "sample": 2, "run": 2}
    assert [r["method"] for r in outcome.rows] == ["realfill", "backbone-untuned"]
    untuned = json.loads((plan.stage_dir("train", plan.runs[1]) / "done.json").read_text())
    assert untuned["steps"] == 0
    steps = [(done, total) for stage, done, total in reporter.progress if stage.startswith("train:")]
    assert steps and steps[-1] == (2, 2)  # the fine-tune's steps reached the display through the hook


def test_a_new_ranker_reuses_the_finished_fine_tune_and_samples(scenes, tmp_path, plugins):
    """Adding a configuration to an ablation folder runs only what it does not share."""
    _pipeline_or_skip(plugins)
    overrides = [a for a in SMOKE_SETTINGS if a != "--set"]
    out = tmp_path / "abl"

    def ablation(*rankers):
        configs = [Configuration(r, [f'ranker.name="{r}"']) for r in rankers]
        plan = build_plan([scenes[1]], configs, out, preset="smoke", overrides=overrides, plugins=plugins)
        return run_ablation(plan, LocalExecutor(), PlainReporter(Console(file=io.StringIO())), metrics=["psnr"])

    first = ablation("sift")
    assert first.ran == {"train": 1, "sample": 1, "run": 1}
    second = ablation("sift", "lightglue")
    assert second.ran == {"train": 0, "sample": 0, "run": 1}
    assert second.skipped == {"train": 1, "sample": 1, "run": 1}
    assert [r["ranker"] for r in second.rows] == ["sift", "lightglue"] and not second.failed


def test_plan_prints_the_runs_and_what_they_share_and_writes_nothing(example_scene, tmp_path, capsys, monkeypatch):
    """The issue's check: two rankers are 2 runs sharing training and sampling; --plan makes no folder (not
    even the default runs/ablation under the working folder)."""
    monkeypatch.chdir(tmp_path)
    assert ablate(example_scene, "--preset", "smoke", "--matcher", "sift", "--matcher", "warp", "--plan") == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: 2 runs on 1 scene: 1 training, 1 sampling")
    runs = out.split("stage keys' inputs")[0]
    assert runs.count("shared with run 2") == 2 and runs.count("shared with run 1") == 2  # train and sample
    inputs = [line for line in out.splitlines() if line.startswith("  train ") and ": {" in line]
    assert len(inputs) == 1 and '"masking": {' in inputs[0] and '"ranker"' not in inputs[0]
    assert sum(line.startswith("  run ") and '"ranker": {' in line for line in out.splitlines()) == 2
    assert list(tmp_path.iterdir()) == []
