"""Property-based tests (hypothesis) of issues 22 and 29's promise: every number in the config is bounded
where it is declared (docs/method.md "Bounds"), so any value either validates and runs, or is refused in one
line naming its key, exit 2, with no file written.

The keys are discovered from the pydantic models and the registries, not listed by hand: every int and float
field of every section (train, sample, select, the top level) and of every registered component's config, of
every role, baselines included (``--set baselines.NAME.KEY``), so a new component is covered the day it is
registered. ``test_every_numeric_key_is_bounded_both_ways`` holds each of them to a lower and an upper bound.

The budget (about 70 s of CPU on this 2-core machine, on top of the suite's plugin import; more wall time
when other work shares the cores):

- validation: ``test_hypothesis_any_value_of_any_key_validates_or_is_refused_in_one_line`` draws 400 values
  (any int up to +-2**70, any float with inf, nan, subnormals and +-1e300, and each key's bounds) through
  the real ``realfill config`` path in-process (``realfill.cli.main``, about 25 ms each); a refused value
  goes through ``realfill fill`` too, which must leave no run folder;
- running: ``test_hypothesis_accepted_values_run_a_one_step_fill`` runs 5 real one-step ``fill --preset
  smoke`` runs, each with a component drawn for every role among those that run here (no weights to
  download: tiny-sd2, tiny-sdxl, tiny-flux, scratch-pixel; lora, full; every masking; sift, warp), every
  baseline that runs here compared (telea, geometric, multi-homography, in-context, the tiny editors),
  and a value drawn for *every* numeric key of the sections, of those components and of every baseline
  at once (about 75 keys a fill): floats over their whole declared range, ints near their lower bound (a
  run's cost grows with counts; huge counts are refused by the validation test's bounds), and seeds and
  sides (``resolution``) up to their upper bound too. A run must end with exit 0, no nan pixel and every
  baseline's row, or with one line and exit 2 (weights that diverge, in training's loss or in sampling's
  pixels, are one line too: no bound rules out every joint extreme, such as lr 0.8 with a LoRA scale of
  3500).

What they found, now bounded: learning rates and weight decay of 1e300 (nan weights), a subnormal
adam_epsilon (0 in float32: a nan loss), a LoRA alpha of 1e308 (inf in float32: 0 * inf is nan). Issue 29:
every key of the baselines, rankers, masking strategies and backbones that had no upper bound; and, once
they ran, multi-homography's nan at ``reach`` 0 or subnormal, an editor ``strength`` lost in diffusers'
rounding (no step left: a traceback after the fill), lora on scratch-pixel failing only after the run
folder was made (now refused with the config: ``Adapter.check_backbone``).
"""

from __future__ import annotations

import math
import tempfile
import types
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from realfill.baselines import RUNNABLE_KINDS
from realfill.cli import main
from realfill.config import RunConfigBase
from realfill.config_files import COMPONENT_FIELDS
from realfill.plugins import RealfillPlugins

PLUGINS = RealfillPlugins(autoload=False)
RUN_ROLES = {role: field for field, role in COMPONENT_FIELDS.items()}


def _numeric(field) -> tuple[type, list] | None:
    """(int or float, its constraints) for a scalar numeric field, also as a member of a union (``int |
    None``, ``Annotated[int, Field(ge=1)] | Literal["auto"]``); None for anything else (bool included)."""
    args = typing.get_args(field.annotation) if typing.get_origin(field.annotation) in (typing.Union, types.UnionType) \
        else (field.annotation,)
    for arg in args:
        if typing.get_origin(arg) is typing.Annotated and typing.get_args(arg)[0] in (int, float):
            # Annotated[int, Field(ge=1, le=1000)]: the FieldInfo holds the constraints in its own metadata
            inner = [m for meta in arg.__metadata__ for m in (meta.metadata if isinstance(meta, FieldInfo) else [meta])]
            return typing.get_args(arg)[0], [*inner, *field.metadata]
        if arg in (int, float):
            return arg, list(field.metadata)
    return None


def _bounds(field) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low inclusive, high inclusive) from a field's ge/gt/le/lt constraints."""
    low = high = None
    low_incl = high_incl = True
    for meta in _numeric(field)[1]:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(meta, name, None)
            if value is None:
                continue
            if name in ("ge", "gt"):
                low, low_incl = value, name == "ge"
            else:
                high, high_incl = value, name == "le"
    return low, high, low_incl, high_incl


def numeric_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type, object]]:
    """(dotted key, int or float, pydantic field) for every numeric field of ``model`` and its sections."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += numeric_keys(annotation, f"{prefix}{name}.")
        elif (numeric := _numeric(field)) is not None:
            keys.append((f"{prefix}{name}", numeric[0], field))
    return keys


SECTION_KEYS = numeric_keys(RunConfigBase)
#: (role, component name, key, kind, field) for every numeric key of every component config
COMPONENT_KEYS = [(role, component.name, key, kind, field)
                  for role, registry in PLUGINS.registries.items()
                  for component in (registry.get(name) for name in registry.names())
                  for key, kind, field in numeric_keys(component.Config)]


def runs_here(component) -> bool:
    """A component that needs nothing to download or install (its ``needs`` name no weights, no package)."""
    return not any(need.startswith(("weights:", "package:")) for need in component.needs)


def test_the_keys_are_discovered():
    """A guard that the discovery finds what it must (a model change that hid the keys would pass vacuously)."""
    found = {key for key, _, _ in SECTION_KEYS}
    assert {"seed", "train.resolution", "sample.guidance_scale", "sample.steps", "select.keep_fraction"} <= found
    components = {(role, name) for role, name, *_ in COMPONENT_KEYS}
    assert components >= {("ranker", "sift"), ("adapter", "lora"), ("backbone", "tiny-sd2"), ("baseline", "telea"),
                          ("baseline", "multi-homography"), ("baseline", "tiny-flux-kontext"), ("ranker", "warp"),
                          ("backbone", "scratch-pixel"), ("backbone", "tiny-flux"), ("masking", "strokes")}
    # every role with a component that has a numeric key is walked (the registries drive it, not a list)
    assert {role for role, *_ in COMPONENT_KEYS} >= {"backbone", "adapter", "masking", "ranker", "baseline"}


def test_every_numeric_key_is_bounded_both_ways():
    """Issue 29: every numeric key of every section and of every registered component's config, baselines
    included, declares a lower and an upper bound next to it (``Field(ge=..., le=...)``), so a value that
    would crash after training (``baselines.multi-homography.clean=10**9``, ``ranker.max_keypoints=10**12``)
    is refused by ``realfill config``."""
    unbounded = [f"{role}:{component or ''}:{key} {_bounds(field)[:2]}" for role, component, key, _, field in ALL_KEYS
                 if None in _bounds(field)[:2]]
    assert not unbounded, unbounded


def _edges(kind: type, field) -> list:
    low, high, _, _ = _bounds(field)
    around = [b + d for b in (low, high) if b is not None for d in ((-1, 0, 1) if kind is int else (-1e-9, 0, 1e-9))]
    return [kind(v) for v in around] if kind is int else around


def any_value(kind: type, field) -> st.SearchStrategy:
    ints = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from([0, 1, -1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64]))
    floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1e300, 5e-324, -0.0]))
    edges = _edges(kind, field)
    return st.one_of(ints, floats, *([st.sampled_from(edges)] if edges else []))


def toml_literal(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def _assert_refused(code: int, err: str, key: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert key.split(".")[-1] in lines[0], (key, lines[0])


ALL_KEYS = [("section", None, key, kind, field) for key, kind, field in SECTION_KEYS] + COMPONENT_KEYS


def trains(backbone: str) -> str:
    """The first adapter (lora first, the smoke preset's) that can train ``backbone``."""
    backbone_class = PLUGINS.registry("backbone").get(backbone)
    names = sorted(PLUGINS.registry("adapter").names(), key=lambda name: name != "lora")
    return next(name for name in names if not PLUGINS.registry("adapter").get(name).check_backbone(backbone_class))


def dotted_key(role: str, component: str | None, key: str) -> str:
    """How ``--set`` names a key: ``train.steps``, ``ranker.max_keypoints``, ``baselines.telea.radius``."""
    if role == "section":
        return key
    return f"baselines.{component}.{key}" if role == "baseline" else f"{RUN_ROLES[role]}.{key}"


@pytest.mark.slow
@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hypothesis_any_value_of_any_key_validates_or_is_refused_in_one_line(data, example_scene, tmp_path, capsys):
    role, component, key, kind, field = data.draw(st.sampled_from(ALL_KEYS), label="key")
    value = data.draw(any_value(kind, field), label="value")
    if role != "section" and role not in RUN_ROLES:  # metric, baseline, tracker: not in a run config; alone
        from pydantic import ValidationError

        try:
            PLUGINS.registry(role).get(component).Config.model_validate({key: value})
        except ValidationError as exc:
            assert exc.errors()[0]["loc"][0] == key
        return
    dotted = dotted_key(role, component, key)
    sets = ["--set", f"{RUN_ROLES[role]}.name={component}"] if role in RUN_ROLES else []
    if role == "backbone":  # with an adapter that trains it (smoke's lora cannot train scratch-pixel)
        sets += ["--set", f"adapter.name={trains(component)}"]
    sets += ["--set", f"{dotted}={toml_literal(value)}"]
    code, err = _run(capsys, ["config", "--preset", "smoke", *sets])
    if code == 0:
        return
    _assert_refused(code, err, dotted)
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"  # one per example (tmp_path is shared)
    compare = ["--baseline", component] if role == "baseline" else []
    code, err = _run(capsys, ["fill", str(example_scene), "--preset", "smoke", *compare, *sets, "--out", str(out)])
    _assert_refused(code, err, dotted)
    assert not out.exists()


def runnable_value(key: str, kind: type, field) -> st.SearchStrategy:
    """Values a one-step smoke fill can run in seconds: floats over the declared range, ints near their
    lower bound, seeds and sides (``resolution``) up to their upper bound too."""
    low, high, low_incl, high_incl = _bounds(field)
    if kind is float:
        return st.floats(min_value=low, max_value=high, exclude_min=not low_incl, exclude_max=not high_incl,
                         allow_nan=False, allow_infinity=False)
    low = 0 if low is None else int(low) + (0 if low_incl else 1)
    choices = st.integers(low, low + 2)
    name = key.split(".")[-1]
    if name.endswith("seed") and high is not None:
        choices = st.one_of(choices, st.just(int(high)))
    if name == "max_references":  # at least the example scene's 3, or the scene itself is refused
        choices = st.integers(3, 5)
    if name == "resolution":
        choices = st.one_of(choices, st.just(128))  # 2x tiny-sd2's native 64 px, the most it allows
    return choices


#: per run role, the components that run here (no weights to download), by the registry: a new one is drawn
#: the day it is registered
RUNNABLE = {role: [name for name in PLUGINS.registry(role).names() if runs_here(PLUGINS.registry(role).get(name))]
            for role in RUN_ROLES}
#: the baselines that run here and that fill compares with (a pipeline baseline, backbone-untuned, is a run of
#: its own, for ablate), each compared in every drawn fill
RUNNABLE_BASELINES = [name for name in PLUGINS.registry("baseline").names() if runs_here(PLUGINS.registry("baseline").get(name))
                      and PLUGINS.registry("baseline").get(name).kind in RUNNABLE_KINDS]


def test_the_runnable_components_are_found():
    assert {"tiny-sd2", "tiny-flux", "scratch-pixel"} <= set(RUNNABLE["backbone"])
    assert {"sift", "warp"} <= set(RUNNABLE["ranker"]) and "loftr" not in RUNNABLE["ranker"]
    assert {"telea", "multi-homography", "tiny-flux-kontext", "in-context"} <= set(RUNNABLE_BASELINES)
    assert "flux-kontext" not in RUNNABLE_BASELINES  # its weights are gated downloads


@pytest.mark.slow
@pytest.mark.filterwarnings("error:invalid value encountered:RuntimeWarning")  # nan pixels: a run gone to nan
# no shrinking: each example is a fill of seconds, and shrinking one failure took over 5 minutes here (the
# failing draws are printed whole, one line per key)
@pytest.mark.slow
@settings(max_examples=5, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_hypothesis_accepted_values_run_a_one_step_fill(data, example_scene, tmp_path, capsys, one_thread):
    import json

    chosen = {role: data.draw(st.sampled_from(names), label=role) for role, names in RUNNABLE.items()}
    keys = [(key, kind, field) for key, kind, field in SECTION_KEYS if key not in ("train.threads",)]
    keys += [(dotted_key(role, name, key), kind, field) for role, name, key, kind, field in COMPONENT_KEYS
             if chosen.get(role) == name or (role == "baseline" and name in RUNNABLE_BASELINES)]
    sets = [arg for role, name in chosen.items() for arg in ("--set", f"{RUN_ROLES[role]}.name={name}")]
    for key, kind, field in keys:
        value = data.draw(runnable_value(key, kind, field), label=key)
        sets += ["--set", f"{key}={toml_literal(value)}"]
    code, err = _run(capsys, ["config", "--preset", "smoke", *sets])
    # cross-key rules (min_side <= max_side, a side the backbone's levels divide, ...) refuse many joint
    # draws: those are the validation test's business; a run needs an accepted config
    assume(code == 0)
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"  # one per example (tmp_path is shared)
    compare = [arg for name in RUNNABLE_BASELINES for arg in ("--baseline", name)]
    code, err = _run(capsys, ["fill", str(example_scene), "--preset", "smoke", *sets, *compare, "--out", str(out)])
    if code == 0:
        assert (out / "result.png").is_file(), err
        record = json.loads((out / "comparison.json").read_text())
        rows = {row["method"] for row in record["methods"]} | set(record.get("skipped_baselines", {}))
        assert set(RUNNABLE_BASELINES) <= rows, (rows, err)
        return
    # the config validated and the scene is good: the one refusal left is weights that diverge (one line,
    # from training's loss or from sampling's pixels: bounds cannot rule out every joint extreme)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err and "diverged" in lines[0], err
