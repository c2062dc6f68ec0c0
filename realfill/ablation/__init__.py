"""The ablation engine behind ``realfill ablate``: many configurations over many scenes, stages shared.

A configuration is a list of config overrides on top of a base (a preset or a config file). The plan
is the cartesian product of the repeated flags (or a sweep file), times the scenes. Each run has three
stages, and each stage is keyed by the settings it depends on, so it runs once however many runs need it:

- ``train``  keyed by (scene, seed, device, max_references, train.*, and every role whose stage is training:
  backbone, adapter, masking, and any role that declares no stage)
- ``sample`` keyed by (train key, sample.*, the roles of the sampling stage)
- ``rank``   keyed by (sample key, select.*, ranker and the roles of the ranking or report stage), then the
  evaluation of its result

The inputs are :func:`realfill.ablation.plan.stage_inputs` (the role table's ``Role.affects`` places each role);
``realfill ablate ... --plan`` prints them without running anything.

Layout under ``OUT``::

    plan.json                         what was asked (configurations, scenes)
    stages/train/SCENE-KEY/           adapter/, train_log.jsonl, ... and done.json when finished
    stages/sample/SCENE-KEY/samples/  000.png ... and done.json
    runs/SCENE/LABEL-KEY/             config.toml, run.json, ranking.json, result.png, contact_sheet.png,
                                      metrics.json, row.json (done) or error.json (failed)
    results.csv  results.json  report.md  chart.png

Resuming: a stage or run with its ``done.json``/``row.json`` is finished and skipped; a folder without one
(a killed run) is cleared and redone; a failed run is recorded in ``error.json`` and retried next time.
Image baselines (``telea``, ``geometric``) are runs with a single ``baseline`` stage; so are model baselines
(``in-context``), which sample the run's backbone untuned in that stage (a GPU on Ray where the run's is).
Besides ``report.md``, ``realbench.md``/``realbench.json`` hold the RealFill paper's table (its six metrics,
each with its direction and region, and the paper's numbers quoted beside them).
"""

from realfill.ablation.engine import AblationOutcome, run_ablation
from realfill.ablation.executors import (
    LocalExecutor,
    RayExecutor,
    measured,
    parse_ray_resources,
    run_final_stage,
    run_sample_stage,
    run_train_stage,
)
from realfill.ablation.plan import (
    AXIS_FLAGS,
    DONE,
    ERROR,
    ROW,
    Configuration,
    Plan,
    RunSpec,
    axis_flags,
    build_plan,
    describe_plan,
    expand_scene_folders,
    stage_inputs,
    override_string,
    product_configurations,
    read_sweep,
)
from realfill.ablation.reports import KEY_METRICS, bar_chart, metric_names, report_markdown, summarize, write_results

__all__ = [
    "AXIS_FLAGS", "DONE", "ERROR", "KEY_METRICS", "ROW", "AblationOutcome", "Configuration", "LocalExecutor", "Plan",
    "RayExecutor", "RunSpec", "axis_flags", "bar_chart", "build_plan", "describe_plan", "stage_inputs",
    "expand_scene_folders", "measured", "metric_names", "override_string", "parse_ray_resources",
    "product_configurations", "read_sweep", "report_markdown", "run_ablation", "run_final_stage",
    "run_sample_stage", "run_train_stage", "summarize", "write_results",
]
