"""The ablation engine behind ``realfill ablate``: many configurations over many scenes, stages shared.

A configuration is a list of config overrides on top of a base (a preset or a config file). The plan
is the cartesian product of the repeated flags (or a sweep file), times the scenes. Each run has three
stages, and each stage is keyed by the settings it depends on, so it runs once however many runs need it:

- ``train``  keyed by (scene, seed, device, max_references, backbone, adapter, masking, train.*)
- ``sample`` keyed by (train key, sample.*)
- ``rank``   keyed by (sample key, ranker, select.*), then the evaluation of its result

Layout under ``OUT``::

    plan.json                         what was asked (configurations, scenes)
    stages/train/SCENE-KEY/           adapter/, train_log.jsonl, ... and done.json when finished
    stages/sample/SCENE-KEY/samples/  000.png ... and done.json
    runs/SCENE/LABEL-KEY/             config.toml, run.json, ranking.json, result.png, contact_sheet.png,
                                      metrics.json, row.json (done) or error.json (failed)
    results.csv  results.json  report.md  chart.png

Resuming: a stage or run with its ``done.json``/``row.json`` is finished and skipped; a folder without one
(a killed run) is cleared and redone; a failed run is recorded in ``error.json`` and retried next time.
Image baselines (``telea``, ``geometric``) are runs with a single ``baseline`` stage.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import re
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from PIL import Image

from realfill.baselines import run_image_baseline
from realfill.config import COMPONENT_FIELDS, dump_config, read_toml, resolve_config, validate_config
from realfill.errors import UserError
from realfill.evaluation import RUN_RECORD, build_metrics, evaluate_run
from realfill.runfolder import OutOfSpace, atomic_write_text, save_image

DONE = "done.json"
ROW = "row.json"
ERROR = "error.json"
#: the flags that make axes, and the run-config field each sets
AXIS_FLAGS = {"backbone": "backbone.name", "adapter": "adapter.name", "masking": "masking.name", "ranker": "ranker.name"}
#: metrics shown in summaries first (the paper's table), when present
KEY_METRICS = ("psnr_masked", "ssim_masked", "ms_ssim_masked", "lpips", "dreamsim", "dino", "clip", "psnr", "ssim", "ms_ssim")


# -- configurations ----------------------------------------------------------------------------------


@dataclass
class Configuration:
    """One column of the ablation: overrides on the base config, or an image baseline."""

    label: str
    overrides: list[str] = field(default_factory=list)
    baseline: str | None = None  # "telea" | "geometric": no training, no sampling

    def as_dict(self) -> dict:
        return {"label": self.label, "overrides": list(self.overrides), "baseline": self.baseline}


def override_string(key: str, value: Any) -> str:
    """``("sample.steps", 4)`` -> ``"sample.steps=4"`` with the value as a TOML literal."""
    literal = tomli_w.dumps({"v": value}).strip().removeprefix("v = ")
    return f"{key}={literal}"


def product_configurations(axes: dict[str, list[Any]]) -> list[Configuration]:
    """The cartesian product of ``{dotted key: [values]}``; labels name the values of axes with 2+."""
    keys = list(axes)
    varying = [k for k in keys if len(axes[k]) > 1]
    configurations = []
    for values in itertools.product(*(axes[k] for k in keys)):
        chosen = dict(zip(keys, values, strict=True))
        label = ",".join(f"{_short(k)}={chosen[k]}" for k in varying) or "base"
        configurations.append(Configuration(label, [override_string(k, v) for k, v in chosen.items()]))
    return configurations


def _short(key: str) -> str:
    return key.removesuffix(".name")


def read_sweep(path: Path) -> tuple[dict, list[Configuration]]:
    """A sweep file: optional ``preset``/``config``/``set`` for the base, then either ``[axes]`` (a
    cartesian product of dotted keys -> lists of values) or ``[[run]]`` tables (an explicit list; each
    holds dotted keys -> values and an optional ``label``)."""
    data = read_toml(path)
    unknown = set(data) - {"preset", "config", "set", "axes", "run"}
    if unknown:
        raise UserError(f"{path}: unknown sweep key(s) {', '.join(sorted(unknown))}; valid: preset, config, set, axes, run")
    if ("axes" in data) == ("run" in data):
        raise UserError(f"{path}: a sweep needs exactly one of [axes] (a product) or [[run]] (a list)")
    base = {k: data[k] for k in ("preset", "config", "set") if k in data}
    if "set" in base and not (isinstance(base["set"], list) and all(isinstance(s, str) for s in base["set"])):
        raise UserError(f"{path}: 'set' must be a list of \"key=value\" strings")
    if "axes" in data:
        axes = {}
        for key, values in _flatten(data["axes"]).items():
            values = values if isinstance(values, list) else [values]
            if not values:
                raise UserError(f"{path}: axes.{key} is an empty list")
            axes[AXIS_FLAGS.get(key, key)] = values
        return base, product_configurations(axes)
    configurations = []
    for index, run in enumerate(data["run"]):
        if not isinstance(run, dict):
            raise UserError(f"{path}: run #{index + 1} must be a table")
        run = dict(run)
        label = str(run.pop("label", "")) or None
        flat = {AXIS_FLAGS.get(k, k): v for k, v in _flatten(run).items()}
        overrides = [override_string(k, v) for k, v in flat.items()]
        configurations.append(Configuration(label or ",".join(f"{_short(k)}={v}" for k, v in flat.items()) or f"run{index + 1}", overrides))
    return base, configurations


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# -- the plan ----------------------------------------------------------------------------------------


def _key(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")[:80] or "run"


@dataclass
class RunSpec:
    scene: Path
    scene_name: str
    configuration: Configuration
    config: Any | None  # the validated RunConfig (None for image baselines)
    train_key: str | None
    sample_key: str | None
    run_key: str
    run_dir: Path

    @property
    def label(self) -> str:
        return self.configuration.label

    def components(self) -> dict[str, str]:
        if self.config is None:
            return {"method": self.configuration.baseline}
        method = "backbone-untuned" if self.config.train.steps == 0 else "realfill"
        return {"method": method, **{f: getattr(self.config, f).name for f in COMPONENT_FIELDS}}


@dataclass
class Plan:
    out: Path
    runs: list[RunSpec]
    base: dict

    def stages(self, kind: str) -> dict[str, RunSpec]:
        """The distinct stages of a kind, keyed by stage key, with one run that needs each."""
        stages: dict[str, RunSpec] = {}
        for run in self.runs:
            key = run.train_key if kind == "train" else run.sample_key
            if key is not None:
                stages.setdefault(key, run)
        return stages

    def stage_dir(self, kind: str, run: RunSpec) -> Path:
        key = run.train_key if kind == "train" else run.sample_key
        return self.out / "stages" / kind / f"{_slug(run.scene_name)}-{key}"


def build_plan(
    scenes: list[Path],
    configurations: list[Configuration],
    out: Path,
    *,
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: Iterable[str] = (),
    plugins=None,
) -> Plan:
    if not scenes:
        raise UserError("realfill ablate: give at least one SCENE folder")
    if not configurations:
        raise UserError("realfill ablate: nothing to run (no configurations)")
    names: dict[str, int] = {}
    scene_names = []
    for scene in scenes:
        if not Path(scene).is_dir():
            raise UserError(f"{scene}: no such scene folder (expected ref/ and target/ inside)")
        name = Path(scene).resolve().name
        names[name] = names.get(name, 0) + 1
        scene_names.append(name if names[name] == 1 else f"{name}-{names[name]}")
    runs = []
    seen: set[str] = set()
    for scene, scene_name in zip(scenes, scene_names, strict=True):
        scene = Path(scene).resolve()
        for configuration in configurations:
            if configuration.baseline is not None:
                run_key = _key({"scene": str(scene), "baseline": configuration.baseline})
                config = train_key = sample_key = None
            else:
                config = resolve_config(
                    preset=preset, config_file=config_file, overrides=[*overrides, *configuration.overrides], plugins=plugins
                )
                data = config.model_dump(mode="json")
                train_key = _key({"scene": str(scene), **{k: data[k] for k in
                                  ("seed", "device", "max_references", "backbone", "adapter", "masking", "train")}})
                sample_key = _key({"train": train_key, "sample": data["sample"]})
                run_key = _key({"sample": sample_key, "ranker": data["ranker"], "select": data["select"]})
            if run_key in seen:  # two spellings of the same run: keep the first
                continue
            seen.add(run_key)
            run_dir = out / "runs" / _slug(scene_name) / f"{_slug(configuration.label)}-{run_key[:8]}"
            runs.append(RunSpec(scene, scene_name, configuration, config, train_key, sample_key, run_key, run_dir))
    base = {"preset": preset, "config": str(config_file) if config_file else None, "set": list(overrides)}
    return Plan(Path(out), runs, base)


# -- measuring a stage -------------------------------------------------------------------------------


@contextmanager
def measured(record: dict):
    """Seconds and peak resident memory (MiB, sampled every 20 ms; and CUDA's peak when on a GPU)."""
    try:
        import psutil

        process = psutil.Process()

        def rss() -> int:
            return process.memory_info().rss
    except ImportError:  # pragma: no cover - psutil comes with ray and most installs
        import resource

        def rss() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    peak = [rss()]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cuda = False
    try:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001
        pass
    start = time.perf_counter()
    try:
        yield record
    finally:
        record["seconds"] = round(time.perf_counter() - start, 3)
        stop.set()
        thread.join()
        peak[0] = max(peak[0], rss())
        record["peak_rss_mb"] = round(peak[0] / 2**20, 1)
        if cuda:
            import torch

            record["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


# -- the stages (top-level functions of plain dicts, so a Ray worker can run them) -------------------

_worker_plugin_sets: dict[tuple, Any] = {}


def _worker_plugins(task: dict):
    """This process's plugins: the caller's (set_plugins, as the CLI does) in the driver; in a Ray worker,
    a manager built like the driver's (third-party autoload on or off, the same blocked plugins)."""
    import realfill.plugins as plugins_module

    if plugins_module._default is not None:
        return plugins_module._default
    key = (bool(task.get("autoload", True)), tuple(task.get("blocked", ())))
    if key not in _worker_plugin_sets:
        _worker_plugin_sets[key] = plugins_module.RealfillPlugins(autoload=key[0], blocked=key[1])
    return _worker_plugin_sets[key]


class _StepObserver:
    """A plugin, registered for one local training stage, that forwards training steps to the display."""

    def __init__(self, total: int, progress: Callable[[int, int], None]):
        self.total, self.progress = total, progress

    def realfill_train_step_end(self, step, loss, learning_rates, seconds):
        self.progress(step, self.total)


def _fresh(directory: Path) -> None:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def _write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # a finished marker is whole or absent


def _stage(task: dict, body: Callable[[dict, Any], dict], progress: Callable | None = None) -> dict:
    """Run a stage body with timing, memory and error capture; mark it done only when it succeeded."""
    directory = Path(task["dir"])
    record: dict[str, Any] = {"kind": task["kind"], "key": task["key"], "dir": str(directory)}
    plugins = _worker_plugins(task)
    try:
        with measured(record):
            record.update(body(task, plugins, progress) or {})
        record["status"] = "ok"
        _write_json(directory / DONE, record)
    except OutOfSpace:
        raise  # a full disk fails every run after this one too: stop, say so once
    except Exception as exc:  # noqa: BLE001 - recorded; the other runs go on
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    return record


def _stage_api():
    """The method engineer's separately callable stages (realfill.run)."""
    try:
        from realfill import run as run_module
    except ImportError as exc:
        raise UserError(f"the fill pipeline (realfill.run) is not available: {exc}") from None
    return run_module


def _train_body(task, plugins, progress):
    from realfill.scene import load_scene

    config = validate_config(task["config"], "ablation config", plugins)
    scene = load_scene(task["scene"], max_references=config.max_references)
    directory = Path(task["dir"])
    _fresh(directory)
    observer = None
    if progress is not None:
        observer = _StepObserver(config.train.steps, progress)
        plugins.register(observer, name=f"ablation-progress-{id(observer)}")
    try:
        _stage_api().train_stage(scene, config, directory, plugins=plugins)
    finally:
        if observer is not None:
            plugins.pm.unregister(observer)
    return {"steps": config.train.steps}


def _sample_body(task, plugins, progress):
    from realfill.scene import load_scene

    config = validate_config(task["config"], "ablation config", plugins)
    scene = load_scene(task["scene"], max_references=config.max_references)
    directory = Path(task["dir"])
    _fresh(directory)
    paths = _stage_api().sample_stage(scene, config, Path(task["train_dir"]), directory, plugins=plugins)
    return {"samples": len(paths)}


def _rank_body(task, plugins, progress):
    from realfill.scene import load_scene

    config = validate_config(task["config"], "ablation config", plugins)
    scene = load_scene(task["scene"], max_references=config.max_references)
    sample_paths = sorted((Path(task["sample_dir"]) / "samples").glob("*.png"))
    if not sample_paths:
        raise RuntimeError(f"{task['sample_dir']}: the sampling stage left no samples")
    ranking = _stage_api().rank_stage(scene, config, Path(task["dir"]), sample_paths, plugins=plugins)
    return {"best": ranking[0]["file"], "best_score": ranking[0]["score"]}


def _baseline_body(task, plugins, progress):
    from realfill.contact_sheet import contact_sheet
    from realfill.scene import load_scene, read_rgb

    scene = load_scene(task["scene"])
    path = run_image_baseline(task["baseline"], scene, Path(task["dir"]))
    sheet = contact_sheet(scene.references, scene.masked_target(), [(task["baseline"], read_rgb(path))], scene.gt)
    save_image(Path(task["dir"]) / "contact_sheet.png", sheet)
    return {}


def _evaluate_into(task: dict, plugins, record: dict) -> None:
    run_dir = Path(task["dir"])
    metrics = build_metrics(plugins, task.get("metrics") or None, {k: Path(v) for k, v in task.get("metric_weights", {}).items()})
    samples = Path(task["sample_dir"]) / "samples" if task.get("sample_dir") else None
    with measured(timing := {}):
        evaluation = evaluate_run(run_dir, metrics, sample_dir=samples)
    record["eval_seconds"] = timing["seconds"]
    record["metrics"] = evaluation["values"]
    record["skipped_metrics"] = evaluation["skipped"]
    if "selection" in evaluation:
        record["selection"] = evaluation["selection"]


def run_train_stage(task: dict, progress: Callable | None = None) -> dict:
    return _stage(task, _train_body, progress)


def run_sample_stage(task: dict, progress: Callable | None = None) -> dict:
    return _stage(task, _sample_body, progress)


def run_final_stage(task: dict, progress: Callable | None = None) -> dict:
    """Rank (or run the image baseline), then evaluate; the run's ``done.json`` holds its metrics."""

    def body(task, plugins, progress):
        run_dir = Path(task["dir"])
        _fresh(run_dir)
        atomic_write_text(run_dir / "config.toml", task["config_toml"])
        _write_json(run_dir / RUN_RECORD, {"scene": task["scene"], "label": task["label"], "overrides": task["overrides"]})
        out = (_baseline_body if task.get("baseline") else _rank_body)(task, plugins, progress)
        _evaluate_into(task, plugins, out)
        return out

    return _stage(task, body, progress)


# -- executors ---------------------------------------------------------------------------------------


class LocalExecutor:
    """Runs stages one after another in this process, with live progress from training."""

    name = "local"

    def run(self, fn: Callable, tasks: list[dict], on_start: Callable, on_done: Callable, on_progress: Callable) -> None:
        for task in tasks:
            on_start(task)
            on_done(task, fn(task, lambda done, total, t=task: on_progress(t, done, total)))


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast, with the address named, when nothing listens there (ray.init would retry for minutes)."""
    import socket

    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms: let Ray resolve them
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc}); start one with "
                        "`ray start --head` or drop --address for a local instance") from None


class RayExecutor:
    """Each stage is a Ray task (1 CPU) on the cluster at ``address`` (default: a new local one)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise UserError("--executor ray: ray is not installed; pip install 'realfill[ray]'") from None
        self.ray = ray
        if address:
            _probe(address)
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            if address:
                kwargs["address"] = address
            else:
                kwargs.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"--address {address}: cannot reach a Ray cluster there ({exc})") from None

    def run(self, fn, tasks, on_start, on_done, on_progress) -> None:
        remote = self.ray.remote(num_cpus=1)(fn)
        pending = {}
        for task in tasks:
            on_start(task)
            pending[remote.remote(task)] = task
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    record = self.ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died
                    record = {"kind": task["kind"], "key": task["key"], "status": "failed",
                              "error": f"ray task failed: {type(exc).__name__}: {exc}"}
                on_done(task, record)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


# -- the engine --------------------------------------------------------------------------------------


@dataclass
class AblationOutcome:
    rows: list[dict]
    ran: dict[str, int]
    skipped: dict[str, int]
    failed: list[dict]


def _finished(directory: Path) -> dict | None:
    marker = directory / DONE
    if marker.is_file():
        try:
            return json.loads(marker.read_text())
        except json.JSONDecodeError:
            return None
    return None


def run_ablation(
    plan: Plan,
    executor,
    reporter,
    *,
    metrics: list[str] | None = None,
    metric_weights: dict[str, Path] | None = None,
    blocked: Iterable[str] = (),
    plugins=None,
) -> AblationOutcome:
    """Train, sample and rank what the plan needs and is not yet finished; write the results."""
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "plan.json", {
        "base": plan.base,
        "runs": [{"scene": str(r.scene), "configuration": r.configuration.as_dict(), "run_dir": str(r.run_dir)} for r in plan.runs],
    })
    autoload = plugins is None or any(not info.builtin for info in plugins.plugin_infos())
    common = {"blocked": list(blocked), "autoload": autoload, "metrics": list(metrics or []),
              "metric_weights": {k: str(v) for k, v in (metric_weights or {}).items()}}
    ran = {"train": 0, "sample": 0, "run": 0}
    skipped = {"train": 0, "sample": 0, "run": 0}
    failed_stage: dict[str, str] = {}  # stage key -> error, for the runs that depend on it
    reporter.start(plan, executor.name)

    def on_start(task):
        reporter.stage_started(task["id"], task["kind"], task["title"])

    def on_progress(task, done, total):
        reporter.stage_progress(task["id"], done, total)

    def on_done(task, record):
        ok = record.get("status") == "ok"
        if task["kind"] in ("train", "sample"):
            ran[task["kind"]] += 1
            if not ok:
                failed_stage[task["key"]] = f"{task['kind']} stage failed: {record.get('error')}"
        reporter.stage_finished(task["id"], task["kind"], task["title"], record)
        if task["kind"] == "run":
            ran["run"] += 1
            spec = specs[task["id"]]
            row = _row(spec, plan, record)
            if ok:
                _write_json(Path(task["dir"]) / ROW, row)
            else:
                _write_json(Path(task["dir"]) / ERROR, {"error": record.get("error"), "traceback": record.get("traceback")})
            rows[spec.run_key] = row
            reporter.run_finished(row)

    rows: dict[str, dict] = {}
    specs: dict[str, RunSpec] = {}  # task id -> its run (kept here: tasks travel to Ray workers as plain dicts)
    finished_runs = {}
    for spec in plan.runs:
        row_file = spec.run_dir / ROW
        if (spec.run_dir / DONE).is_file() and row_file.is_file():
            finished_runs[spec.run_key] = json.loads(row_file.read_text())
    needed = [s for s in plan.runs if s.run_key not in finished_runs]

    for kind, runner in (("train", run_train_stage), ("sample", run_sample_stage)):
        tasks = []
        for key, spec in plan.stages(kind).items():
            if not any((s.train_key if kind == "train" else s.sample_key) == key for s in needed):
                continue  # every run that needs it is finished
            directory = plan.stage_dir(kind, spec)
            if kind == "sample" and spec.train_key in failed_stage:
                failed_stage[key] = failed_stage[spec.train_key]
                continue
            if _finished(directory) is not None:
                skipped[kind] += 1
                reporter.stage_skipped(kind, f"{spec.scene_name} {kind} {key}")
                continue
            task = {**common, "kind": kind, "key": key, "id": f"{kind}:{key}", "dir": str(directory),
                    "title": f"{spec.scene_name} · {kind} {key[:6]}", "scene": str(spec.scene),
                    "config": spec.config.model_dump(mode="json")}
            if kind == "sample":
                task["train_dir"] = str(plan.stage_dir("train", spec))
            tasks.append(task)
        if tasks:
            executor.run(runner, tasks, on_start, on_done, on_progress)

    tasks = []
    for spec in plan.runs:
        if spec.run_key in finished_runs:
            skipped["run"] += 1
            rows[spec.run_key] = finished_runs[spec.run_key]
            reporter.stage_skipped("run", f"{spec.scene_name} {spec.label}")
            reporter.run_finished(finished_runs[spec.run_key], skipped=True)
            continue
        upstream = failed_stage.get(spec.sample_key or "") or failed_stage.get(spec.train_key or "")
        if upstream:
            record = {"status": "failed", "error": upstream}
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            _write_json(spec.run_dir / ERROR, {"error": upstream})
            rows[spec.run_key] = _row(spec, plan, record)
            reporter.run_finished(rows[spec.run_key])
            continue
        task = {**common, "kind": "run", "key": spec.run_key, "id": f"run:{spec.run_key}", "dir": str(spec.run_dir),
                "title": f"{spec.scene_name} · {spec.label}", "scene": str(spec.scene), "label": spec.label,
                "overrides": spec.configuration.overrides, "baseline": spec.configuration.baseline,
                "config_toml": dump_config(spec.config) if spec.config is not None else
                f"# image baseline: {spec.configuration.baseline}\n"}
        if spec.config is not None:
            task["config"] = spec.config.model_dump(mode="json")
            task["sample_dir"] = str(plan.stage_dir("sample", spec))
        specs[task["id"]] = spec
        tasks.append(task)
    if tasks:
        executor.run(run_final_stage, tasks, on_start, on_done, on_progress)

    ordered = [rows[s.run_key] for s in plan.runs if s.run_key in rows]
    write_results(plan, ordered)
    outcome = AblationOutcome(ordered, ran, skipped, [r for r in ordered if r["status"] != "ok"])
    reporter.finish(outcome)
    return outcome


def _stage_times(plan: Plan, spec: RunSpec) -> dict[str, Any]:
    times: dict[str, Any] = {}
    peaks = []
    for kind in ("train", "sample"):
        key = spec.train_key if kind == "train" else spec.sample_key
        if key is None:
            continue
        record = _finished(plan.stage_dir(kind, spec)) or {}
        times[f"{kind}_s"] = record.get("seconds")
        peaks.append(record.get("peak_rss_mb") or 0)
    return times | {"_peaks": peaks}


def _row(spec: RunSpec, plan: Plan, record: dict) -> dict:
    times = _stage_times(plan, spec)
    peaks = times.pop("_peaks") + [record.get("peak_rss_mb") or 0]
    row = {
        "scene": spec.scene_name,
        "configuration": spec.label,
        **spec.components(),
        "status": record.get("status", "failed"),
        "error": record.get("error"),
        "metrics": record.get("metrics", {}),
        "skipped_metrics": record.get("skipped_metrics", {}),
        "train_s": times.get("train_s"),
        "sample_s": times.get("sample_s"),
        "rank_s": (round(record["seconds"] - record.get("eval_seconds", 0), 3) if "seconds" in record else None),
        "eval_s": record.get("eval_seconds"),
        "peak_rss_mb": max(peaks) if peaks else None,
        "selection": record.get("selection"),
        "train_key": spec.train_key,
        "sample_key": spec.sample_key,
        "run_key": spec.run_key,
        "run_dir": str(spec.run_dir.relative_to(plan.out)),
    }
    if "peak_cuda_mb" in record:
        row["peak_cuda_mb"] = record["peak_cuda_mb"]
    return row


# -- results -----------------------------------------------------------------------------------------


def metric_names(rows: list[dict]) -> list[str]:
    names = {k for r in rows for k in r.get("metrics", {})}
    return [m for m in KEY_METRICS if m in names] + sorted(names - set(KEY_METRICS))


def summarize(rows: list[dict]) -> list[dict]:
    """Per configuration: mean and sample std of each metric over its successful runs (scenes)."""
    summary = []
    for label in dict.fromkeys(r["configuration"] for r in rows):
        mine = [r for r in rows if r["configuration"] == label]
        ok = [r for r in mine if r["status"] == "ok"]
        entry = {"configuration": label, "runs": len(mine), "ok": len(ok), "metrics": {}}
        for name in metric_names(ok):
            values = [r["metrics"][name] for r in ok if r["metrics"].get(name) is not None
                      and math.isfinite(r["metrics"][name])]
            if values:
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                entry["metrics"][name] = {"mean": float(np.mean(values)), "std": std, "n": len(values)}
        picks = [r["selection"] for r in ok if r.get("selection")]
        if picks:
            entry["selection"] = {
                "runs": len(picks),
                "pick_beats_mean": sum(bool(p["pick_beats_mean"]) for p in picks),
                "pick_minus_mean": float(np.mean([p["pick_minus_mean"] for p in picks])),
                "pick_place": float(np.mean([p["pick_place"] for p in picks])),
                "samples": float(np.mean([p["samples"] for p in picks])),
            }
        summary.append(entry)
    return summary


CSV_FIXED = ["scene", "configuration", "method", "backbone", "adapter", "masking", "ranker", "status", "error",
             "train_s", "sample_s", "rank_s", "eval_s", "peak_rss_mb", "run_dir"]
#: seed selection (``realfill.evaluation.selection_stats``), masked PSNR of the pick and of the samples
CSV_SELECTION = ["pick_psnr_masked", "samples_mean_psnr_masked", "pick_beats_mean", "pick_place"]


def _selection_cells(row: dict) -> dict:
    s = row.get("selection") or {}
    return {"pick_psnr_masked": s.get("pick"), "samples_mean_psnr_masked": s.get("mean"),
            "pick_beats_mean": s.get("pick_beats_mean"), "pick_place": s.get("pick_place")}


def write_results(plan: Plan, rows: list[dict]) -> None:
    out = plan.out
    names = metric_names(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIXED + names + CSV_SELECTION, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**{k: row.get(k) for k in CSV_FIXED}, **{m: row["metrics"].get(m) for m in names},
                         **_selection_cells(row)})
    atomic_write_text(out / "results.csv", buffer.getvalue())
    summary = summarize(rows)
    _write_json(out / "results.json", {"rows": rows, "summary": summary})
    chart = names[0] if names else None
    if chart:
        save_image(out / "chart.png", bar_chart(summary, [m for m in names if m in KEY_METRICS[:7]][:4] or names[:1]))
    atomic_write_text(out / "report.md", report_markdown(plan, rows, summary, chart is not None))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def report_markdown(plan: Plan, rows: list[dict], summary: list[dict], chart: bool) -> str:
    names = metric_names(rows)
    lines = ["# Ablation report", "", f"{len(rows)} runs: {len({r['scene'] for r in rows})} scenes x "
             f"{len(summary)} configurations. Base: {json.dumps(plan.base)}.", "",
             "## Summary (mean ± std over scenes)", ""]
    header = ["configuration", "ok/runs", *names]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        cells = [entry["configuration"], f"{entry['ok']}/{entry['runs']}"]
        for name in names:
            m = entry["metrics"].get(name)
            if m is None:
                cells.append("—")
            else:  # one scene has no spread
                cells.append(f"{m['mean']:.4f} ± {m['std']:.4f}" if m["n"] > 1 else f"{m['mean']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    skipped = {k: v for r in rows for k, v in r.get("skipped_metrics", {}).items()}
    if skipped:
        lines += ["", "Metrics skipped: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items()))]
    if chart:
        lines += ["", "![chart](chart.png)"]
    selections = [e for e in summary if e.get("selection")]
    if selections:
        lines += ["", "## Seed selection (masked PSNR of the ranker's pick against the samples it chose from)", "",
                  "A ranker that helps puts its pick above the samples' mean in more than half of the runs; "
                  "one that ranks at random, in about half.", "",
                  "| configuration | pick > mean | pick − mean (dB) | pick's place | samples |", "|---|---|---|---|---|"]
        for entry in selections:
            sel = entry["selection"]
            lines.append(f"| {entry['configuration']} | {sel['pick_beats_mean']}/{sel['runs']} | "
                         f"{sel['pick_minus_mean']:+.2f} | {sel['pick_place']:.1f} | {sel['samples']:.0f} |")
    lines += ["", "## Runs", "", "| scene | configuration | status | train s | sample s | rank s | peak MiB | contact sheet |",
              "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        status = row["status"] if row["status"] == "ok" else f"failed: {(row.get('error') or '')[:120]}"
        sheet = f"{row['run_dir']}/contact_sheet.png"
        link = f"![{row['scene']} {row['configuration']}]({sheet})" if (plan.out / sheet).is_file() else "—"
        lines.append(f"| {row['scene']} | {row['configuration']} | {status} | {_fmt(row.get('train_s'), 1)} | "
                     f"{_fmt(row.get('sample_s'), 1)} | {_fmt(row.get('rank_s'), 1)} | {_fmt(row.get('peak_rss_mb'), 0)} | {link} |")
    return "\n".join(lines) + "\n"


# -- pictures (Pillow; matplotlib is not a dependency) ------------------------------------------------


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def bar_chart(summary: list[dict], metrics: list[str], panel: tuple[int, int] = (360, 260)) -> Image.Image:
    """One panel per metric: a bar per configuration at its mean, with a ±std whisker."""
    from PIL import ImageDraw

    pw, ph = panel
    legend_h = 16 * len(summary) + 10
    image = Image.new("RGB", (pw * len(metrics), ph + legend_h), "white")
    draw = ImageDraw.Draw(image)
    for index, metric in enumerate(metrics):
        x0 = index * pw
        left, right, top, bottom = x0 + 50, x0 + pw - 12, 24, ph - 20
        draw.text((x0 + 50, 6), metric, fill="black")
        stats = [e["metrics"].get(metric) for e in summary]
        highs = [s["mean"] + s["std"] for s in stats if s]
        lows = [min(0.0, s["mean"] - s["std"]) for s in stats if s]
        if not highs:
            continue
        vmax, vmin = max(highs) * 1.1 or 1.0, min(lows)
        span = (vmax - vmin) or 1.0

        def y(v: float, bottom=bottom, top=top, vmin=vmin, span=span) -> float:
            return bottom - (v - vmin) / span * (bottom - top)

        draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
        for tick in np.linspace(vmin, vmax, 5):
            draw.line([(left - 4, y(tick)), (left, y(tick))], fill="black")
            draw.text((x0 + 4, y(tick) - 6), f"{tick:.3g}", fill="black")
        slot = (right - left) / max(1, len(stats))
        for j, s in enumerate(stats):
            if not s:
                continue
            bx0, bx1 = left + j * slot + slot * 0.15, left + (j + 1) * slot - slot * 0.15
            draw.rectangle([bx0, y(s["mean"]), bx1, y(max(vmin, 0.0))], fill=PALETTE[j % len(PALETTE)])
            cx = (bx0 + bx1) / 2
            draw.line([(cx, y(s["mean"] + s["std"])), (cx, y(s["mean"] - s["std"]))], fill="black", width=2)
            draw.text((bx0, y(s["mean"]) - 12), f"{s['mean']:.3g}", fill="black")
    for j, entry in enumerate(summary):
        ly = ph + 4 + 16 * j
        draw.rectangle([10, ly, 22, ly + 12], fill=PALETTE[j % len(PALETTE)])
        draw.text((28, ly), entry["configuration"], fill="black")
    return image
