"""Shared fixtures: the bundled example scene, a plugin manager, fake entry points."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"


@pytest.fixture(scope="session")
def example_scene() -> Path:
    return ROOT / "examples" / "motorcycle"


@pytest.fixture
def one_thread():
    """Torch on one thread: on this shared 2-core machine two threads ran tiny models up to 30x slower
    (OpenMP oversubscription), and one thread keeps float results reproducible."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """A local model cache that holds nothing, whatever this machine's holds."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def plugins():
    """A fresh plugin manager with the built-ins only (no third-party entry points)."""
    from realfill.plugins import RealfillPlugins

    return RealfillPlugins(autoload=False)


class DummyDist:
    def __init__(self, name: str, version: str):
        self.metadata = {"Name": name}
        self.version = version


class DummyEntryPoint:
    """Stands in for an installed package's entry point (pytest's testing/test_config.py does the same):
    ``load()`` really imports the plugin file from tests/plugins/."""

    group = "realfill"

    def __init__(self, name: str, filename: str, dist: str = "dummy-dist", version: str = "1.2.3"):
        self.name = name
        self.value = f"tests.plugins.{filename}"
        self.filename = filename
        self.dist = DummyDist(dist, version)

    def load(self):
        module_name = f"realfill_test_plugin_{self.filename}"
        spec = importlib.util.spec_from_file_location(module_name, TEST_PLUGINS / f"{self.filename}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        return module


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Call with DummyEntryPoints; RealfillPlugins created afterwards (autoload on) load them."""
    import realfill.plugins as plugins_module

    def install(*eps: DummyEntryPoint):
        monkeypatch.setattr(plugins_module, "entry_points", lambda group: [ep for ep in eps if group == ep.group])
        monkeypatch.delenv("REALFILL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
        monkeypatch.delenv("REALFILL_NO_PLUGINS", raising=False)

    return install


def record_scene(run_dir: Path, scene_path: Path) -> None:
    """Write ``run_dir/run.json`` as ``realfill fill`` does (the scene and its content fingerprint), for a run
    folder a test builds by hand: commands that read a run folder refuse one that cannot prove its scene."""
    import json

    from realfill.fingerprint import FINGERPRINT_KEY, scene_fingerprint
    from realfill.scene import load_scene

    record = {"scene": str(Path(scene_path).resolve()), FINGERPRINT_KEY: scene_fingerprint(load_scene(scene_path))}
    (Path(run_dir) / "run.json").write_text(json.dumps(record))


@pytest.fixture(scope="session")
def tracked_run(tmp_path_factory, example_scene):
    """The run folder of issue 30's check command, run once in process: ``realfill fill examples/motorcycle
    --preset smoke --steps 4 --set train.validation_steps=2 --tracker tensorboard`` (tests/test_tracking.py
    reads its event files, tests/test_report.py opens its report.html in Chromium)."""
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("the tracking extra is not installed: pip install 'realfill[tracking]'")
    from realfill.cli import main

    out = tmp_path_factory.mktemp("tracked") / "run"
    code = main(["fill", str(example_scene), "--preset", "smoke", "--steps", "4", "--set", "train.validation_steps=2",
                 "--tracker", "tensorboard", "--out", str(out)])
    assert code == 0
    return out
