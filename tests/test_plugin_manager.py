"""The plugin system itself: built-ins, entry points, blocking, broken plugins, duplicates, hooks."""

from __future__ import annotations

import warnings

import pytest
import numpy as np
import torch

from realfill.errors import UnknownComponentError, UserError
from realfill.plugins import BUILTIN_PLUGINS, RealfillPlugins, RealfillPluginWarning
from tests.conftest import DummyEntryPoint


def load(**kwargs) -> RealfillPlugins:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RealfillPluginWarning)
        plugins = RealfillPlugins(**kwargs)
        plugins.registries
    return plugins


def test_builtins_load_without_problems(plugins):
    assert plugins.problems == []
    names = {info.name for info in plugins.plugin_infos()}
    assert names and names <= set(BUILTIN_PLUGINS)
    assert all(info.builtin and info.distribution == "realfill" for info in plugins.plugin_infos())


def test_entry_point_plugin_is_listed_with_its_version_and_usable(fake_entry_points):
    fake_entry_points(DummyEntryPoint("center", "center_box", dist="realfill-center", version="2.0.1"))
    plugins = load()
    info = {i.name: i for i in plugins.plugin_infos()}["center"]
    assert (info.version, info.distribution, info.builtin) == ("2.0.1", "realfill-center", False)
    assert info.components == {"masking": ["center-box"]}
    masker = plugins.registry("masking").create(plugins.registry("masking").get("center-box").Config(fraction=0.5))
    masks = masker.make_masks(2, 8, 8, is_target=torch.zeros(2, dtype=torch.bool),
                              target_masks=torch.zeros(2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert masks.shape == (2, 1, 8, 8) and masks.sum() == 2 * 16
    assert masks[0, 0, 2:6, 2:6].eq(1).all()


def test_disable_autoload_env_skips_entry_points(fake_entry_points, monkeypatch):
    fake_entry_points(DummyEntryPoint("center", "center_box"))
    monkeypatch.setenv("REALFILL_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = load()
    assert "center" not in {i.name for i in plugins.plugin_infos()}
    assert "center-box" not in plugins.registry("masking")


@pytest.mark.parametrize("how", ["argument", "env"])
def test_block_list(fake_entry_points, monkeypatch, how):
    fake_entry_points(DummyEntryPoint("center", "center_box"))
    if how == "env":
        monkeypatch.setenv("REALFILL_NO_PLUGINS", "center, other")
        plugins = load()
    else:
        plugins = load(blocked=["center"])
    assert "center-box" not in plugins.registry("masking")


def test_blocking_a_builtin_by_short_name(plugins):
    present = [m for m in BUILTIN_PLUGINS if plugins.pm.get_plugin(m) is not None]
    if not present:
        pytest.skip("no built-in component module is present yet")
    blocked = present[0].removeprefix("realfill_plugins.")
    other = load(autoload=False, blocked=[blocked])
    assert other.pm.get_plugin(present[0]) is None


def test_plugin_failing_at_import_is_named_and_others_still_load(fake_entry_points):
    fake_entry_points(
        DummyEntryPoint("broken", "broken_import", dist="realfill-broken"),
        DummyEntryPoint("center", "center_box"),
    )
    with pytest.warns(RealfillPluginWarning, match=r"plugin 'broken' \(realfill-broken\) failed to import"):
        plugins = RealfillPlugins()
    assert "center-box" in plugins.registry("masking")
    assert any("realfill_no_such_dependency" in p for p in plugins.problems)


def test_plugin_raising_while_registering_is_skipped_whole(fake_entry_points):
    fake_entry_points(DummyEntryPoint("half", "raises_registering"), DummyEntryPoint("center", "center_box"))
    plugins = RealfillPlugins()
    with pytest.warns(RealfillPluginWarning, match="plugin 'half' raised while registering masking strategies"):
        registry = plugins.registry("masking")
    assert "half-registered" not in registry  # what it added before raising is rolled back
    assert "center-box" in registry


def test_misspelled_hook_is_caught_by_check_pending(fake_entry_points):
    fake_entry_points(DummyEntryPoint("typo", "misspelled_hook"), DummyEntryPoint("center", "center_box"))
    with pytest.warns(RealfillPluginWarning, match="plugin 'typo' implements an unknown hook.*realfill_register_ranker"):
        plugins = RealfillPlugins()
    assert plugins.pm.get_plugin("typo") is None
    assert "center-box" in plugins.registry("masking")


def test_two_plugins_registering_one_name_is_an_error_naming_both(fake_entry_points):
    fake_entry_points(DummyEntryPoint("center", "center_box"), DummyEntryPoint("twin", "center_box_twin"))
    plugins = RealfillPlugins()
    with pytest.raises(UserError, match="masking 'center-box' is registered twice: by plugin 'center' and by plugin 'twin'"):
        plugins.registry("masking")


def test_unknown_name_lists_the_known_ones(fake_entry_points):
    fake_entry_points(DummyEntryPoint("center", "center_box"))
    plugins = load()
    with pytest.raises(UnknownComponentError) as info:
        plugins.registry("masking").get("centre-box")
    message = str(info.value)
    assert "unknown masking 'centre-box'" in message and "did you mean 'center-box'" in message
    assert "center-box" in message.split("known masking strategies:")[1]


# -- one test per hook (tests/test_docs.py checks that every hook has one) ------------------------


def _registered_by(plugins, role, component):
    return plugins.registry(role).plugin_of(component)


def test_hook_realfill_register_masking(fake_entry_points):
    fake_entry_points(DummyEntryPoint("center", "center_box"))
    assert _registered_by(load(), "masking", "center-box") == "center"


def _single_component_plugin(role_base, hook_name, component_name, role):
    """Build a real in-memory plugin for one role, registered like any third-party one."""
    from typing import Literal

    from realfill import hookimpl
    from realfill.components import ComponentConfig

    config = type("Config", (ComponentConfig,), {"__annotations__": {"name": Literal[component_name]}, "name": component_name})
    component = type("C", (role_base,), {"name": component_name, "summary": "test", "Config": config})

    class Plugin:
        pass

    def register(registry):
        registry.add(component)

    setattr(Plugin, hook_name, staticmethod(hookimpl(register)))
    plugins = load(autoload=False)
    plugins.register(Plugin(), name=f"test-{role}", version="9.9")
    assert plugins.registry(role).get(component_name) is component
    assert _registered_by(plugins, role, component_name) == f"test-{role}"
    return plugins


def test_hook_realfill_register_backbones():
    from realfill.components import Backbone

    _single_component_plugin(Backbone, "realfill_register_backbones", "test-backbone", "backbone")


def test_hook_realfill_register_adapters():
    from realfill.components import Adapter

    _single_component_plugin(Adapter, "realfill_register_adapters", "test-adapter", "adapter")


def test_hook_realfill_register_rankers():
    from realfill.components import Ranker

    _single_component_plugin(Ranker, "realfill_register_rankers", "test-ranker", "ranker")


def test_hook_realfill_register_metrics():
    from realfill.components import Metric

    _single_component_plugin(Metric, "realfill_register_metrics", "test-metric", "metric")


def test_hook_realfill_register_baselines(fake_entry_points, example_scene, tmp_path):
    """A third-party baseline (tests/plugins/navier_stokes.py, as an entry point) is registered beside the
    built-ins, listed with its plugin, and runs like them."""
    from realfill.baselines import run_image_baseline
    from realfill.components import Baseline
    from realfill.scene import load_scene, read_rgb

    _single_component_plugin(Baseline, "realfill_register_baselines", "test-baseline", "baseline")
    fake_entry_points(DummyEntryPoint("navier-stokes", "navier_stokes", dist="realfill-ns", version="0.3"))
    plugins = load()
    assert {"telea", "geometric", "multi-homography", "backbone-untuned", "navier-stokes"} <= set(plugins.registry("baseline").names())
    assert _registered_by(plugins, "baseline", "navier-stokes") == "navier-stokes"
    scene = load_scene(example_scene)
    image = read_rgb(run_image_baseline("navier-stokes", scene, tmp_path / "ns", plugins=plugins))
    assert np.array_equal(image[~scene.mask], scene.target[~scene.mask])
    assert not np.array_equal(image[scene.mask], scene.target[scene.mask])


def test_hook_realfill_register_trackers():
    from realfill.components import Tracker

    plugins = _single_component_plugin(Tracker, "realfill_register_trackers", "test-tracker", "tracker")
    assert {"tensorboard", "mlflow"} <= set(plugins.registry("tracker").names())


@pytest.fixture
def observed(fake_entry_points):
    fake_entry_points(DummyEntryPoint("observer", "observer"), DummyEntryPoint("raising", "raising_observer"))
    plugins = load()
    events = plugins.pm.get_plugin("observer").EVENTS
    events.clear()
    return plugins, events


def test_hook_realfill_run_start(observed, example_scene, tmp_path):
    from realfill.scene import load_scene

    plugins, events = observed
    plugins.run_start(run_dir=tmp_path, config=None, scene=load_scene(example_scene))
    assert events == [("run_start", tmp_path, "motorcycle")]


def test_hook_realfill_train_step_end(observed):
    plugins, events = observed
    with pytest.warns(RealfillPluginWarning, match="plugin 'raising' raised in realfill_train_step_end"):
        plugins.train_step_end(step=3, loss=0.25, learning_rates={"denoiser": 2e-4}, seconds=1.5)
    assert events == [("train_step_end", 3, 0.25, {"denoiser": 2e-4}, 1.5)]  # delivered despite the other's error


def test_hook_realfill_sampling_done(observed, tmp_path):
    plugins, events = observed
    paths = [tmp_path / "samples" / "000.png"]
    plugins.sampling_done(run_dir=tmp_path, sample_paths=paths)
    assert events == [("sampling_done", tmp_path, paths)]


def test_hook_realfill_validation_done(observed, tmp_path):
    plugins, events = observed
    path = tmp_path / "validation" / "step-00002.png"
    plugins.validation_done(run_dir=tmp_path, step=2, path=path, images=[np.zeros((4, 4, 3), np.uint8)] * 2)
    assert events == [("validation_done", tmp_path, 2, path, 2)]


def test_hook_realfill_ranking_done(observed, tmp_path):
    plugins, events = observed
    ranking = [{"file": "000.png", "score": 12.0, "rank": 1, "details": {}}]
    plugins.ranking_done(run_dir=tmp_path, ranking=ranking)
    assert events == [("ranking_done", tmp_path, ranking)]


def test_hook_realfill_run_end(observed, tmp_path):
    plugins, events = observed
    plugins.run_end(run_dir=tmp_path, result_path=None, error="scene: bad mask")
    assert events == [("run_end", tmp_path, None, "scene: bad mask")]
