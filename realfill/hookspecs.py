"""Every hook specification of realfill, in one place (like pytest's ``_pytest/hookspec.py``).

Plugins implement these with ``@realfill.hookimpl`` (or a plain function of the same name: an unmarked
``realfill_*`` function counts, so a misspelled hook name fails loudly instead of doing nothing) and are
found through the ``realfill`` entry-point group. The built-in components in ``realfill_plugins`` use
exactly the same hooks. Hooks are always called with keyword arguments, one plugin at a time; an
implementation may accept any subset of a hook's parameters. A plugin that raises is reported by name
as a warning and skipped, and everything else goes on. None of the hooks is ``firstresult``.

Plugins are found in this order: the built-in modules of ``realfill_plugins`` (the repository's
``plugins/``), then every entry point in the ``realfill`` group. ``REALFILL_DISABLE_PLUGIN_AUTOLOAD=1``
skips the entry points; ``--no-plugin NAME`` (repeatable) or ``REALFILL_NO_PLUGINS=a,b`` blocks single
plugins (entry-point names, or built-in modules such as ``rankers.sift``). ``realfill plugins`` lists
what loaded.

docs/plugin_hooks.md is generated from this file and the role table: ``python -m realfill.hookdoc >
docs/plugin_hooks.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from realfill.components import BUILTIN_ROLES, Role

if TYPE_CHECKING:
    from realfill.registry import ComponentRegistry  # noqa: F401 - the register hooks' annotation

PROJECT_NAME = "realfill"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -------------------------------------------------------------------------------------------------
# Registration hooks: each receives its role's registry; implementations call ``registry.add(cls)``.
# Called once per plugin manager, plugin by plugin, so a plugin that raises is reported and skipped.
# One spec per role of the role table (realfill.components.BUILTIN_ROLES), made by register_hookspec;
# a plugin adds roles (and so register hooks) with realfill_add_roles.
# -------------------------------------------------------------------------------------------------


def register_hookspec(role: Role):
    """The register hook of ``role``, ``<role.hook>(registry: ComponentRegistry) -> None``, marked as a spec.

    One generic spec for every role, built-in or added by a plugin (``realfill_add_roles``)."""

    def spec(registry):  # noqa: ARG001 - a spec has no body
        """"""

    spec.__name__ = spec.__qualname__ = role.hook
    spec.__module__ = __name__
    spec.__annotations__ = {"registry": "ComponentRegistry", "return": "None"}
    example = "My" + "".join(part.capitalize() for part in role.name.replace("-", "_").split("_"))
    spec.__doc__ = f"""Add {role.adds} to ``registry``.

    :param registry: the {role.name} registry; ``registry.add(cls)`` with a
        :class:`{role.base.__module__}.{role.base.__qualname__}`.

    Not firstresult: every plugin's implementation is called.

    Sample implementation::

        @hookimpl
        def {role.hook}(registry):
            registry.add({example})
    """
    return hookspec(spec)


# realfill_register_backbones, _adapters, _masking, _rankers, _metrics, _baselines: one per built-in role
for _role in BUILTIN_ROLES:
    globals()[_role.hook] = register_hookspec(_role)
del _role


@hookspec
def realfill_add_roles() -> list[Role]:
    """Declare new component roles; the platform then calls each role's register hook like a built-in's.

    Each :class:`realfill.components.Role` names the role, its base class (a ``Component`` subclass whose
    ``role`` is the role's name) and its register hook (``realfill_register_<plural>(registry)``, which the
    plugin then implements like a built-in role's). A role with a ``field`` enters the run config (validated
    from TOML and ``--set`` like ``ranker``) and gets a ``--FIELD`` flag on ``fill``, ``train``, ``sample``,
    ``config`` and ``ablate`` (an axis), and a column in the ablation's ``results.csv``. ``stage`` (``train``,
    ``sample``, ``rank``, ``report``) is the stage whose ablation key holds the field; unset, training (never
    merged). ``plural`` names several in messages; unset, the English plural of ``name``. A field at the
    role's ``default`` is left out of run names, stage keys and a resumed run folder's ``config.toml``.
    ``realfill plugins`` lists the new role's components like any other. A role whose name, hook or field is
    taken is refused with a warning naming the plugin. ``tests/plugins/new_role.py`` is a whole example.

    Not firstresult: every plugin's roles are added, in plugin registration order.

    Sample implementation::

        @hookimpl
        def realfill_add_roles():
            return [Role("watermark", Watermark, "realfill_register_watermarks", "watermarks", field="watermark",
                         default="none", stage="sample", plural="watermarks")]
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
def realfill_validation_done(run_dir: Path, step: int, path: Path, images: list[Any]) -> None:
    """Validation images were sampled during training (every ``train.validation_steps`` steps) and written.

    :param run_dir: the training's folder (a run folder, or an ablation's train stage).
    :param step: the 1-based training step they were sampled after.
    :param path: the strip written, ``validation/step-NNNNN.png``.
    :param images: the completions in the strip, HxWx3 uint8 RGB arrays at the target's size, fixed seeds.

    Not firstresult; return value ignored.

    Sample implementation::

        @hookimpl
        def realfill_validation_done(step, path):
            print(f"step {step}: {path}")
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
