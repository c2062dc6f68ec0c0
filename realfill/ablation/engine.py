"""The engine: runs what the plan needs and is not yet finished, each train and sample stage once for
all the runs that share it, resuming from the ``done.json``/``row.json`` markers; then writes the results."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realfill.ablation.executors import BASELINE_FAILED, run_final_stage, run_sample_stage, run_train_stage
from realfill.ablation.plan import DONE, ERROR, ROW, Plan, RunSpec, _write_json
from realfill.ablation.reports import write_results
from realfill.config import dump_config
from realfill.validation import latest_validation

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
    protocol: str = "pick",
    trackers: Iterable[str] = (),
) -> AblationOutcome:
    """Train, sample and rank what the plan needs and is not yet finished; write the results. ``trackers``
    (names, checked by the caller): each training stage and each run is logged to them under its own name
    (``SCENE/train-LABELS``, ``SCENE/LABEL``) in ``OUT``, so TensorBoard overlays them."""
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "plan.json", {
        "base": plan.base,
        "runs": [{"scene": str(r.scene), "configuration": r.configuration.as_dict(), "run_dir": str(r.run_dir)} for r in plan.runs],
    })
    autoload = plugins is None or any(not info.builtin for info in plugins.plugin_infos())
    common = {"blocked": list(blocked), "autoload": autoload, "metrics": list(metrics or []),
              "metric_weights": {k: str(v) for k, v in (metric_weights or {}).items()}, "protocol": protocol,
              "trackers": list(trackers), "track_dir": str(out)}
    ran = {"train": 0, "sample": 0, "run": 0}
    skipped = {"train": 0, "sample": 0, "run": 0}
    failed_stage: dict[str, str] = {}  # stage key -> error, for the runs that depend on it
    reporter.start(plan, executor.name)

    def on_start(task):
        reporter.stage_started(task["id"], task["kind"], task["title"])

    def on_progress(task, done, total):
        reporter.stage_progress(task["id"], done, total)
        show = getattr(reporter, "stage_validation", None)  # the TUI: the latest strip beside the bar
        if show is not None and task["kind"] == "train" and (latest := latest_validation(Path(task["dir"]))):
            show(task["id"], *latest)

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
            row = json.loads(row_file.read_text())
            if row.get("protocol", "pick") == protocol:  # scored another way: scored again, never relabelled
                finished_runs[spec.run_key] = row
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
            snapshots = plan.snapshot_steps(key) if kind == "train" and spec.config.train.keep_adapters else None
            done = _finished(directory)
            if done is not None and (snapshots is None or set(snapshots) <= set(done.get("snapshot_steps", []))):
                skipped[kind] += 1
                reporter.stage_skipped(kind, f"{spec.scene_name} {kind} {key}")
                continue
            task = {**common, "kind": kind, "key": key, "id": f"{kind}:{key}", "dir": str(directory),
                    "title": f"{spec.scene_name} · {kind} {key[:6]}", "scene": str(spec.scene),
                    "config": spec.config.model_dump(mode="json")}
            if kind == "sample":
                task["train_dir"] = str(plan.stage_dir("train", spec))
                if spec.config.train.keep_adapters:  # the adapter kept at this run's step
                    task["step"] = spec.config.train.steps
            else:  # the tracker's name of a training: the runs it serves
                served = [s.label for s in plan.runs if s.train_key == key]
                task["track_name"] = f"{spec.scene_name}/train-{','.join(served)}"
            if snapshots is not None:  # one training to the last step, keeping the adapter at each
                task["config"]["train"]["steps"] = snapshots[-1]
                task["snapshot_steps"] = snapshots
                task["title"] += f" (steps {', '.join(map(str, snapshots))} from one training)"
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
                "track_name": f"{spec.scene_name}/{spec.label}",
                "overrides": spec.configuration.overrides, "baseline": spec.configuration.baseline,
                "config_toml": dump_config(spec.config) if spec.config is not None else
                f"# image baseline: {spec.configuration.baseline}\n"}
        if spec.config is not None:
            task["config"] = spec.config.model_dump(mode="json")
        if spec.sample_key is not None:
            task["sample_dir"] = str(plan.stage_dir("sample", spec))
        if spec.baseline_settings:
            task["baseline_settings"] = spec.baseline_settings
        specs[task["id"]] = spec
        tasks.append(task)
    if tasks:
        executor.run(run_final_stage, tasks, on_start, on_done, on_progress)

    ordered = [rows[s.run_key] for s in plan.runs if s.run_key in rows]
    write_results(plan, ordered)
    outcome = AblationOutcome(ordered, ran, skipped,
                              [r for r in ordered if r["status"] not in ("ok", "skipped", BASELINE_FAILED)])
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
        "higher_is_better": record.get("higher_is_better", {}),
        "train_s": times.get("train_s"),
        "sample_s": times.get("sample_s"),
        "rank_s": (round(record["seconds"] - record.get("eval_seconds", 0), 3) if "seconds" in record else None),
        "eval_s": record.get("eval_seconds"),
        "peak_rss_mb": max(peaks) if peaks else None,
        "selection": record.get("selection"),
        "protocol": record.get("protocol"),
        "scored_images": record.get("scored_images"),
        "train_key": spec.train_key,
        "sample_key": spec.sample_key,
        "run_key": spec.run_key,
        "run_dir": str(spec.run_dir.relative_to(plan.out)),
    }
    if "peak_cuda_mb" in record:
        row["peak_cuda_mb"] = record["peak_cuda_mb"]
    return row
