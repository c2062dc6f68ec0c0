"""A test plugin file: an image baseline, ``raises``, whose ``complete`` raises ``RuntimeError`` (a broken
third-party baseline must cost only its own row)."""

from typing import Literal

from realfill import hookimpl
from realfill.components import Baseline, ComponentConfig


class RaisingBaseline(Baseline):
    name = "raises"
    summary = "a baseline that fails in complete()"

    class Config(ComponentConfig):
        name: Literal["raises"] = "raises"

    def complete(self, scene, context=None):
        raise RuntimeError("the plugin's model is broken")


@hookimpl
def realfill_register_baselines(registry):
    registry.add(RaisingBaseline)
