"""The executors: a stage is a top-level function of a plain dict (so a Ray worker can run it), timed
and measured; ``LocalExecutor`` runs stages one after another here, ``RayExecutor`` as Ray tasks."""

from __future__ import annotations

import socket
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from realfill import run as run_module
from realfill.ablation.plan import DONE, _fresh, _write_json
from realfill.atomic import OutOfSpace, atomic_write_text
from realfill.baselines import run_baseline
from realfill.comparison import baseline_error
from realfill.config import validate_config
from realfill.contact_sheet import write_contact_sheets
from realfill.errors import MissingWeightsError, UserError
from realfill.evaluation import RUN_RECORD, build_metrics, evaluate_run
from realfill.fingerprint import FINGERPRINT_KEY, scene_fingerprint
import realfill.plugins as plugins_module
from realfill.scene import load_scene, read_rgb
from realfill.tracking import Trackers

# -- measuring a stage -------------------------------------------------------------------------------


@contextmanager
def measured(record: dict):
    """Seconds and peak resident memory (MiB, sampled every 20 ms; and CUDA's peak when on a GPU)."""
    try:
        import psutil  # optional: it comes with ray and most installs, not with realfill

        process = psutil.Process()

        def rss() -> int:
            return process.memory_info().rss
    except ImportError:  # pragma: no cover - psutil comes with ray and most installs
        import resource  # the fallback's own

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
            record["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


# -- the stages (top-level functions of plain dicts, so a Ray worker can run them) -------------------

_worker_plugin_sets: dict[tuple, Any] = {}


def _worker_plugins(task: dict):
    """This process's plugins: the caller's (set_plugins, as the CLI does) in the driver; in a Ray worker,
    a manager built like the driver's (third-party autoload on or off, the same blocked plugins)."""
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


class StageSkipped(Exception):
    """A stage that cannot run on this machine (an image baseline without its weights): the run is reported
    as skipped, with this reason, and the ablation does not fail."""


class BaselineFailed(Exception):
    """A baseline whose ``complete`` raised (or called ``sys.exit``): its row says so, with the plugin that
    registered it, and the other rows are kept; a later resume tries it again."""


#: a run's status when its baseline raised (not counted as a failed run: a broken plugin costs only its row)
BASELINE_FAILED = "baseline failed"


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
    except StageSkipped as exc:  # not done (a later resume tries again), not failed either
        record["status"] = "skipped"
        record["error"] = str(exc)
    except BaselineFailed as exc:  # its row holds the error; the ablation goes on and does not fail for it
        record["status"] = BASELINE_FAILED
        record["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded; the other runs go on
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
    return record


def _stage_api():
    """The method engineer's separately callable stages (realfill.run)."""
    return run_module


def _compute(config, plugins):
    """The task's device, precision and threads, resolved and applied once: a stage task is a command of its
    own (a Ray worker, or the local executor's loop)."""
    return _stage_api().check_device(config, plugins).apply()


def _train_body(task, plugins, progress):
    config = validate_config(task["config"], "ablation config", plugins)
    scene = load_scene(task["scene"], max_references=config.max_references)
    directory = Path(task["dir"])
    _fresh(directory)
    observer = None
    if progress is not None:
        observer = _StepObserver(config.train.steps, progress)
        plugins.register(observer, name=f"ablation-progress-{id(observer)}")
    try:
        with _trackers(task, plugins, task["config"]):
            _stage_api().train_stage(scene, config, directory, plugins=plugins, compute=_compute(config, plugins),
                                     snapshot_steps=task.get("snapshot_steps", ()))
    finally:
        if observer is not None:
            plugins.pm.unregister(observer)
    return {"steps": config.train.steps, "snapshot_steps": task.get("snapshot_steps", [])}


def _sample_body(task, plugins, progress):
    config = validate_config(task["config"], "ablation config", plugins)
    scene = load_scene(task["scene"], max_references=config.max_references)
    directory = Path(task["dir"])
    _fresh(directory)
    paths = _stage_api().sample_stage(scene, config, Path(task["train_dir"]), directory, plugins=plugins,
                                      compute=_compute(config, plugins), step=task.get("step"))
    return {"samples": len(paths)}


def _rank_body(task, plugins, progress):
    config = validate_config(task["config"], "ablation config", plugins)
    scene = load_scene(task["scene"], max_references=config.max_references)
    sample_paths = sorted((Path(task["sample_dir"]) / "samples").glob("*.png"))
    if not sample_paths:
        raise RuntimeError(f"{task['sample_dir']}: the sampling stage left no samples")
    ranking = _stage_api().rank_stage(scene, config, Path(task["dir"]), sample_paths, plugins=plugins)
    return {"best": ranking[0]["file"], "best_score": ranking[0]["score"]}


def _baseline_body(task, plugins, progress):
    config = validate_config(task["config"], "ablation config", plugins) if task.get("config") else None
    scene = load_scene(task["scene"], **({"max_references": config.max_references} if config else {}))
    try:
        path = run_baseline(task["baseline"], scene, Path(task["dir"]), plugins=plugins, config=config,
                            settings=task.get("baseline_settings"))
    except MissingWeightsError as exc:  # not on this machine: the report says skipped and why
        raise StageSkipped(str(exc)) from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a broken (third-party) baseline costs only its row
        raise BaselineFailed(f"baseline {task['baseline']!r} of plugin {plugins.registry('baseline').plugin_of(task['baseline'])} "
                             f"failed: {baseline_error(exc)}") from None
    write_contact_sheets(Path(task["dir"]), scene.references, scene.masked_target(), [], scene.gt,
                         baselines=[(f"baseline {task['baseline']}", read_rgb(path))])
    return {}


#: the reason in a metric cell of a scene without ``target/gt.png``
NO_GROUND_TRUTH = "no ground truth (target/gt.png)"


def _trackers(task: dict, plugins, config: dict | None):
    """The ablation's trackers (``--tracker``), started for this stage under its own name."""
    return Trackers(task.get("trackers") or (), plugins).start(Path(task["track_dir"]), task["track_name"], config) \
        if task.get("trackers") else Trackers((), plugins)


def _evaluate_into(task: dict, plugins, record: dict) -> None:
    run_dir = Path(task["dir"])
    if not (Path(task["scene"]) / "target" / "gt.png").is_file():  # its result stands; nothing to score it by
        names = task.get("metrics") or plugins.registry("metric").names()
        record.update(eval_seconds=0.0, metrics={}, higher_is_better={}, protocol=task.get("protocol", "pick"),
                      scored_images=0, skipped_metrics={name: NO_GROUND_TRUTH for name in names})
        return
    metrics = build_metrics(plugins, task.get("metrics") or None, {k: Path(v) for k, v in task.get("metric_weights", {}).items()})
    samples = Path(task["sample_dir"]) / "samples" if task.get("sample_dir") else None
    with measured(timing := {}):
        evaluation = evaluate_run(run_dir, metrics, sample_dir=samples, protocol=task.get("protocol", "pick"))
    record["eval_seconds"] = timing["seconds"]
    record["metrics"] = evaluation["values"]
    record["skipped_metrics"] = evaluation["skipped"]
    record["higher_is_better"] = evaluation["higher_is_better"]
    record["protocol"], record["scored_images"] = evaluation["protocol"], evaluation["scored_images"]
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
        scene = load_scene(task["scene"], max_references=(task.get("config") or {}).get("max_references", 5))
        _write_json(run_dir / RUN_RECORD, {"scene": task["scene"], FINGERPRINT_KEY: scene_fingerprint(scene),
                                           "label": task["label"], "overrides": task["overrides"]})
        out = (_baseline_body if task.get("baseline") else _rank_body)(task, plugins, progress)
        _evaluate_into(task, plugins, out)
        if task.get("trackers"):
            with _trackers(task, plugins, task.get("config")) as trackers:
                trackers.log_metrics(out.get("metrics", {}), step=(task.get("config") or {}).get("train", {}).get("steps", 0))
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


#: the stage kinds a Ray task runs, by the name ``--ray-resources`` uses: ``rank`` is a run's last stage
#: (ranking and evaluation, or a baseline), which needs no GPU unless it is a model baseline (``in-context``)
RAY_STAGES = {"train": "train", "sample": "sample", "run": "rank"}
RAY_RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


def parse_ray_resources(items: list[str]) -> dict[str, dict[str, float]]:
    """``--ray-resources STAGE.KEY=VALUE`` (repeatable; STAGE train, sample or rank; KEY num_cpus, num_gpus
    or memory in bytes) -> ``{stage: {key: value}}``; a bad item is a one-line :class:`UserError`."""
    out: dict[str, dict[str, float]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        stage, dot, name = key.partition(".")
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not sep or not dot or stage not in RAY_STAGES.values() or name not in RAY_RESOURCE_KEYS or value < 0:
            raise UserError(f"--ray-resources {item!r}: expected STAGE.KEY=VALUE with STAGE one of "
                            f"{', '.join(RAY_STAGES.values())} and KEY one of {', '.join(RAY_RESOURCE_KEYS)}, "
                            "e.g. train.num_gpus=1")
        out.setdefault(stage, {})[name] = int(value) if name == "memory" or value.is_integer() else value
    return out


def _assigned(fn: Callable):
    """``fn`` on a Ray worker, returning what Ray gave the task beside its record (what the request got)."""

    def on_worker(task):
        import ray  # optional (realfill[ray]); present on a Ray worker

        return fn(task), ray.get_runtime_context().get_assigned_resources()

    on_worker.__name__ = getattr(fn, "__name__", "stage")
    return on_worker


class RayExecutor:
    """Each stage is a Ray task on the cluster at ``address`` (default: a new local one).

    Training and sampling ask for one GPU where the run's device is a GPU (``device = "cuda..."``), or is
    ``auto`` on a cluster that has GPUs, and so does a model baseline's run (``in-context`` samples the
    backbone); ranking and evaluation (and image baselines) ask for a CPU only.
    Every stage asks for one CPU. ``resources`` (``--ray-resources``) overrides any of it per stage. Ray
    schedules by these declared counts and sets each task's ``CUDA_VISIBLE_DEVICES`` to the GPUs it got."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 resources: dict[str, dict[str, float]] | None = None):
        try:
            import ray  # optional (realfill[ray]), and seconds to import
        except ImportError:
            raise UserError("--executor ray: ray is not installed; pip install 'realfill[ray]'") from None
        self.ray = ray
        self.resources = resources or {}
        self.requests: dict[str, dict] = {}  # task id -> the resources asked for
        self.assigned: dict[str, dict] = {}  # task id -> the resources Ray gave it
        if address:
            _probe(address)
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
            if address:
                kwargs["address"] = address
            else:
                kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1")
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"--address {address}: cannot reach a Ray cluster there ({exc})") from None

    def cluster_gpus(self) -> float:
        return float(self.ray.cluster_resources().get("GPU", 0))

    def stage_resources(self, task: dict) -> dict:
        """What ``task`` asks Ray for (see the class docstring)."""
        stage = RAY_STAGES.get(task["kind"], "rank")
        wanted: dict[str, float] = {"num_cpus": 1}
        if stage in ("train", "sample") or (task.get("baseline") and task.get("config")):
            device = str((task.get("config") or {}).get("device", "auto"))
            if device.startswith("cuda") or (device == "auto" and self.cluster_gpus() > 0):
                wanted["num_gpus"] = 1
        wanted.update(self.resources.get(stage, {}))
        return wanted

    def run(self, fn, tasks, on_start, on_done, on_progress) -> None:
        remote = self.ray.remote(_assigned(fn))
        pending = {}
        for task in tasks:
            on_start(task)
            self.requests[task["id"]] = wanted = self.stage_resources(task)
            pending[remote.options(**wanted).remote(task)] = task
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    record, self.assigned[task["id"]] = self.ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died
                    record = {"kind": task["kind"], "key": task["key"], "status": "failed",
                              "error": f"ray task failed: {type(exc).__name__}: {exc}"}
                on_done(task, record)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()
