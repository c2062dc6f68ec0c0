"""What a run config leaves to the backbone comes from its Backbone class, decided when the config is
resolved: ``train.resolution`` unset is ``native_resolution``; ``sample.steps`` and ``sample.guidance_scale``
``auto`` (their defaults) are ``Backbone.sampling``; ``sample.scheduler = "auto"`` stays as written and is
the model's ``default_scheduler``."""

from __future__ import annotations

import pytest

from realfill.config import dump_config, resolve_config
from realfill.errors import UserError

AUTO = ["sample.steps=auto", "sample.guidance_scale=auto"]


@pytest.mark.parametrize(("backbone", "steps", "guidance", "resolution"), [
    ("tiny-sd2", 200, 1.0, 64), ("sd2-inpaint", 200, 1.0, 512), ("sdxl-inpaint", 200, 1.0, 1024),
    ("tiny-flux", 50, 30.0, 64), ("flux-fill", 50, 30.0, 1024), ("scratch-pixel", 200, 1.0, 64),
])
def test_auto_takes_the_backbones_own_values(plugins, backbone, steps, guidance, resolution):
    # scratch-pixel has no diffusers pipeline for a LoRA to save through: it trains with full (the cpu preset's)
    components = {"backbone": backbone, **({"adapter": "full"} if backbone == "scratch-pixel" else {})}
    config = resolve_config(preset="smoke", components=components, plugins=plugins, overrides=AUTO)
    s, cls = config.sample, plugins.registry("backbone").get(backbone)
    assert (s.scheduler, s.steps, s.guidance_scale) == ("auto", steps, guidance)
    assert (cls.sampling.steps, cls.sampling.guidance_scale) == (steps, guidance)
    dumped = dump_config(config)  # config.toml holds the numbers used; the scheduler keeps "auto"
    assert f"steps = {steps}\n" in dumped and f"guidance_scale = {guidance}\n" in dumped
    assert 'scheduler = "auto"' in dumped
    # the paper preset leaves train.resolution unset: the backbone's native resolution
    paper = resolve_config(preset="paper", components=components, plugins=plugins)
    assert paper.train.resolution == resolution == cls.native_resolution


def test_explicit_values_win_over_the_backbones(plugins):
    config = resolve_config(preset="smoke", components={"backbone": "tiny-flux"}, plugins=plugins,
                            overrides=["sample.steps=7", "sample.guidance_scale=3.5"])
    assert (config.sample.steps, config.sample.guidance_scale) == (7, 3.5)


def test_the_auto_scheduler_is_the_models_own(plugins):
    for name, expected in [("tiny-sd2", "DDPMScheduler"), ("tiny-flux", "FlowMatchEulerDiscreteScheduler")]:
        model = plugins.registry("backbone").create(plugins.registry("backbone").get(name).Config()).load()
        assert type(model.make_scheduler("auto")).__name__ == expected
        assert type(model.make_scheduler(model.default_scheduler)).__name__ == expected


@pytest.mark.parametrize(("override", "says"), [
    ("sample.steps=0", "config key 'sample.steps': Input should be greater than or equal to 1 or auto (got 0)"),
    ("sample.guidance_scale=-1", "config key 'sample.guidance_scale': Input should be greater than or equal to 0 "
                                 "or auto (got -1)"),
])
def test_a_bad_value_names_the_key_and_auto(plugins, override, says):
    with pytest.raises(UserError) as info:
        resolve_config(preset="smoke", overrides=[override], plugins=plugins)
    assert says in str(info.value)
