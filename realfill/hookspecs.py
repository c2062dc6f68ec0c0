"""Every hook specification of realfill, in one place (like pytest's ``_pytest/hookspec.py``).

Plugins implement these with ``@realfill.hookimpl`` and are found through the ``realfill`` entry-point
group. The built-in components in ``realfill_plugins`` use exactly the same hooks. Hooks are always
called with keyword arguments; an implementation may accept any subset of a hook's parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from realfill.registry import ComponentRegistry

PROJECT_NAME = "realfill"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------------------------------
# Registration hooks: each receives its role's registry; implementations call ``registry.add(cls)``.
# Called once per plugin manager, plugin by plugin, so a plugin that raises is reported and skipped.
# -------------------------------------------------------------------------------------------------


@hookspec
def realfill_register_backbones(registry: ComponentRegistry) -> None:
    """Add backbone components (inpainting diffusion models) to ``registry``.

    :param registry: the backbone registry; ``registry.add(cls)`` with a :class:`realfill.components.Backbone`.

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def realfill_register_backbones(registry):
            registry.add(MyBackbone)
    """


@hookspec
def realfill_register_adapters(registry: ComponentRegistry) -> None:
    """Add adapter components (which parameters train, and how they are saved) to ``registry``.

    :param registry: the adapter registry; ``registry.add(cls)`` with a :class:`realfill.components.Adapter`.

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def realfill_register_adapters(registry):
            registry.add(MyAdapter)
    """


@hookspec
def realfill_register_masking(registry: ComponentRegistry) -> None:
    """Add masking strategies (the training masks of a batch) to ``registry``.

    :param registry: the masking registry; ``registry.add(cls)`` with a
        :class:`realfill.components.MaskingStrategy`.

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def realfill_register_masking(registry):
            registry.add(MyMasks)
    """


@hookspec
def realfill_register_rankers(registry: ComponentRegistry) -> None:
    """Add rankers (seed selection by feature correspondences) to ``registry``.

    :param registry: the ranker registry; ``registry.add(cls)`` with a :class:`realfill.components.Ranker`.

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def realfill_register_rankers(registry):
            registry.add(MyRanker)
    """


@hookspec
def realfill_register_metrics(registry: ComponentRegistry) -> None:
    """Add evaluation metrics (result against ground truth) to ``registry``.

    :param registry: the metric registry; ``registry.add(cls)`` with a :class:`realfill.components.Metric`.

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def realfill_register_metrics(registry):
            registry.add(MyMetric)
    """


@hookspec
def realfill_register_baselines(registry: ComponentRegistry) -> None:
    """Add baselines (completions made without RealFill, evaluated beside it) to ``registry``.

    :param registry: the baseline registry; ``registry.add(cls)`` with a :class:`realfill.components.Baseline`
        (an image baseline implements ``complete(scene)``; a pipeline baseline sets ``overrides``).

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def realfill_register_baselines(registry):
            registry.add(PatchMatchBaseline)
    """


# -------------------------------------------------------------------------------------------------
# Run lifecycle hooks: observers (loggers, dashboards, trackers). Their return values are ignored,
# and an observer that raises is reported as a warning; the run goes on.
# -------------------------------------------------------------------------------------------------


@hookspec
def realfill_run_start(run_dir: Path, config: Any, scene: Any) -> None:
    """A run begins: the config is resolved and the scene loaded; nothing has trained yet.

    :param run_dir: the run folder (``--out``), already holding ``config.toml``.
    :param config: the resolved :class:`realfill.config.RunConfig`.
    :param scene: the loaded :class:`realfill.scene.Scene`.

    Not firstresult; return value ignored.

    Sample implementation::

        @hookimpl
        def realfill_run_start(run_dir, config, scene):
            print(f"fill {scene.name} -> {run_dir}")
    """


@hookspec
def realfill_train_step_end(step: int, loss: float, learning_rates: dict[str, float], seconds: float) -> None:
    """One optimizer step finished (called every logged step, as written to ``train_log.jsonl``).

    :param step: the 1-based number of the step just finished.
    :param loss: that step's training loss.
    :param learning_rates: current learning rate per parameter group name (e.g. ``unet``, ``text_encoder``).
    :param seconds: wall time since training started.

    Not firstresult; return value ignored.

    Sample implementation::

        @hookimpl
        def realfill_train_step_end(step, loss):
            wandb.log({"loss": loss}, step=step)
    """


@hookspec
def realfill_sampling_done(run_dir: Path, sample_paths: list[Path]) -> None:
    """Every sample has been generated, composited and written.

    :param run_dir: the run folder.
    :param sample_paths: the written ``samples/NNN.png`` files, in sample order.

    Not firstresult; return value ignored.

    Sample implementation::

        @hookimpl
        def realfill_sampling_done(sample_paths):
            print(len(sample_paths), "samples")
    """


@hookspec
def realfill_ranking_done(run_dir: Path, ranking: list[dict]) -> None:
    """The samples have been ranked; ``ranking.json`` is written.

    :param run_dir: the run folder.
    :param ranking: one dict per sample (``file``, ``score``, ``rank``, ``details``), best first.

    Not firstresult; return value ignored.

    Sample implementation::

        @hookimpl
        def realfill_ranking_done(ranking):
            print("best:", ranking[0]["file"])
    """


@hookspec
def realfill_run_end(run_dir: Path, result_path: Path | None, error: str | None) -> None:
    """A run ended, well or not.

    :param run_dir: the run folder.
    :param result_path: ``result.png`` when the run succeeded, else None.
    :param error: None on success, else a one-line description of what failed.

    Not firstresult; return value ignored.

    Sample implementation::

        @hookimpl
        def realfill_run_end(run_dir, error):
            notify(f"{run_dir}: {'ok' if error is None else error}")
    """
