"""A test plugin file that registers another masking strategy under the taken name ``center-box``."""

from typing import Literal

from realfill import hookimpl
from realfill.components import ComponentConfig, MaskingStrategy


class CenterBoxTwin(MaskingStrategy):
    name = "center-box"
    summary = "the same name as another plugin's component"

    class Config(ComponentConfig):
        name: Literal["center-box"] = "center-box"


@hookimpl
def realfill_register_masking(registry):
    registry.add(CenterBoxTwin)
