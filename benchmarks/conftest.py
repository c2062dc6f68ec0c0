"""Shared benchmark helpers: in-run ratios, peak memory in a fresh process, machine and versions.

- :func:`timed_ratio` (fixture ``ratio``): times a baseline and a candidate **in the same run, interleaved**
  (baseline, candidate, baseline, candidate, ...), after warm-up rounds, and reports the ratio of medians.
  The candidate goes through pytest-benchmark (so ``--benchmark-save``/``--benchmark-compare`` see it);
  the baseline is timed by the same clock in pedantic's ``setup``, just before each candidate round, so
  both see the same load on a shared machine.
- :func:`peak_memory`: runs a stage in a fresh Python process and returns its peak resident set (the
  high-water mark reset after the stage is built) and what it added: tracemalloc does not see torch's
  allocations.
- every benchmark's JSON carries the machine (CPU model, cores, memory) and the versions of torch,
  diffusers, transformers, peft and the benchmark thread count (``machine_info`` in ``--benchmark-json``);
  the ratio helper adds the load average before and after to each benchmark's ``extra_info``.
- every benchmark declares how the gate (``benchmarks/gate.py``) compares its median with a saved one:
  ``@pytest.mark.calibration("compute" | "memory")`` (divided by that calibration kernel,
  ``benchmarks/calibration.py``) or ``"ratio"`` (its in-run ratio alone); it goes in ``extra_info`` with
  ``inner_loops``, the calls per timed round (a millisecond-scale case is timed over rounds of at least
  ``MIN_ROUND_S``).

With ``--benchmark-disable`` (pytest-benchmark's way to run benchmarks as plain tests) every benchmark runs
its code once and keeps its correctness assertions; nothing is timed to a standard, so no speed target is
checked (:func:`meets_target` passes) and the ratios reported come from that single round.

Benchmarks that take the ``bench_threads`` fixture run torch with ``REALFILL_BENCH_THREADS`` threads
(default 1: five people share two cores here, and one thread is the most repeatable; set 2 on an idle
machine). The training-step benchmark runs at one thread and at every core (``ALL_CORES``), what
``realfill fill`` uses by default.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from calibration import KINDS, RATIO_ONLY

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
THREADS = int(os.environ.get("REALFILL_BENCH_THREADS", "1"))
#: how far below its target (a fraction) a ratio may land before the benchmark fails: 0 by default (the
#: targets themselves); scripts/bench.sh --ci sets it, so the CI gate catches real regressions (a cache
#: that stopped caching drops a ratio to about 1) and not the run-to-run spread of a target met narrowly
RATIO_MARGIN = float(os.environ.get("REALFILL_BENCH_RATIO_MARGIN", "0"))
#: a timed round lasts at least this long (seconds): a millisecond-scale case calls its code several times a
#: round (``timed_ratio``'s inner loop), so run-to-run jitter of a few milliseconds does not swamp it
MIN_ROUND_S = 0.1
#: torch's default thread count here (every core), which realfill uses unless train.threads says otherwise
ALL_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
#: set from --benchmark-disable: benchmarks run once as plain tests, no target is checked
DISABLED = False


def pytest_configure(config):
    global DISABLED
    DISABLED = bool(config.getoption("benchmark_disable", False))
    config.addinivalue_line(
        "markers", "calibration(kind): how benchmarks/gate.py compares this benchmark's median with a saved one: "
        f"divided by the calibration kernel of that kind ({', '.join(KINDS)}; benchmarks/calibration.py), or "
        f"'{RATIO_ONLY}' (judged by its in-run ratio alone)")


@pytest.fixture(autouse=True)
def _calibration_kind(request):
    """Record the benchmark's calibration kind (its ``calibration`` marker) in its ``extra_info``, where the
    gate reads it; a benchmark without one fails here, so none is compared by a rule nobody chose."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    marker = request.node.get_closest_marker("calibration")
    kind = marker.args[0] if marker and marker.args else None
    if kind not in (*KINDS, RATIO_ONLY):
        pytest.fail(f"{request.node.nodeid}: declare how the gate compares it: @pytest.mark.calibration(KIND), "
                    f"KIND one of {', '.join((*KINDS, RATIO_ONLY))} (got {kind!r})", pytrace=False)
    request.getfixturevalue("benchmark").extra_info.update(calibration=kind, inner_loops=1)
    yield


def median_seconds(benchmark, own_times: list[float]) -> float:
    """pytest-benchmark's median of the candidate, or with benchmarks disabled (no stats then) the median
    of ``own_times``, the test's own clock around the candidate."""
    if benchmark.disabled or benchmark.stats is None:
        return statistics.median(own_times)
    return benchmark.stats.stats.median


@contextlib.contextmanager
def torch_threads(count: int):
    """Torch on ``count`` threads inside the block, restored afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(old)


@pytest.fixture
def bench_threads():
    """Run this benchmark with ``THREADS`` torch threads, restored afterwards."""
    with torch_threads(THREADS) as count:
        yield count


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    import diffusers
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def machine() -> dict:
    import torch

    # the load average goes in each benchmark's extra_info: here it would make every comparison warn
    # that the machine differs
    info = {"cpu_model": _cpu_model(), "cpu_count": os.cpu_count(), "bench_threads": THREADS}
    try:
        info["memory_total_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info.update(machine())
    machine_info["versions"] = versions()


# -- in-run ratios -------------------------------------------------------------------------------------


@dataclass
class Ratio:
    """Baseline and candidate medians (seconds) from one interleaved run, and baseline / candidate."""

    baseline_s: list[float]
    candidate_median_s: float
    load_before: float
    load_after: float
    extra: dict = field(default_factory=dict)

    @property
    def baseline_median_s(self) -> float:
        return statistics.median(self.baseline_s)

    @property
    def speedup(self) -> float:
        return self.baseline_median_s / self.candidate_median_s


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def inner_loops(call: Callable[[], object], min_round_s: float) -> int:
    """How many calls of ``call`` make a round of at least ``min_round_s`` seconds (timed on one call, after
    the warm-up): a millisecond-scale case is timed over enough calls that it can be compared at all.
    One with ``--benchmark-disable`` (one untimed round)."""
    if DISABLED or min_round_s <= 0:
        return 1
    _sync()
    start = time.perf_counter()
    call()
    _sync()
    return max(1, math.ceil(min_round_s / max(time.perf_counter() - start, 1e-9)))


def timed_ratio(benchmark, baseline: Callable[[], object], candidate: Callable[[], object], *, rounds: int = 5,
                warmup_rounds: int = 1, min_round_s: float = MIN_ROUND_S) -> Ratio:
    """Interleave ``baseline`` and ``candidate`` (each called with no arguments) for ``warmup_rounds`` +
    ``rounds`` rounds; the candidate is pytest-benchmark's measurement. Returns the medians and ratio, per
    call. A round calls each ``inner`` times, enough that a candidate round lasts ``min_round_s`` (the count
    goes in ``extra_info["inner_loops"]``, which the gate divides pytest-benchmark's round median by)."""
    baseline_times: list[float] = []
    candidate_times: list[float] = []
    inner = 1

    def time_baseline():
        _sync()
        start = time.perf_counter()
        for _ in range(inner):
            baseline()
        _sync()
        baseline_times.append((time.perf_counter() - start) / inner)

    def timed_candidate():
        start = time.perf_counter()
        for _ in range(inner):
            candidate()
        _sync()
        candidate_times.append((time.perf_counter() - start) / inner)

    load_before = os.getloadavg()[0]
    if warmup_rounds and not benchmark.disabled:
        baseline()
        candidate()
        warmup_rounds -= 1
    inner = 1 if benchmark.disabled else inner_loops(candidate, min_round_s)
    benchmark.pedantic(timed_candidate, setup=time_baseline, rounds=rounds, warmup_rounds=warmup_rounds)
    measured = baseline_times if benchmark.disabled else baseline_times[warmup_rounds:]  # disabled: one round
    timed = benchmark.stats is not None and not benchmark.disabled  # pytest-benchmark's median is per round
    candidate_median_s = median_seconds(benchmark, candidate_times) / (inner if timed else 1)
    result = Ratio(measured, candidate_median_s, load_before, os.getloadavg()[0])
    benchmark.extra_info.update({
        "baseline_median_s": round(result.baseline_median_s, 5),
        "candidate_median_s": round(result.candidate_median_s, 5),
        "speedup": round(result.speedup, 3),
        "rounds": rounds,
        "inner_loops": inner,
        "load_average_1m": [round(load_before, 2), round(result.load_after, 2)],
    })
    return result


@pytest.fixture
def ratio(benchmark):
    """``ratio(baseline, candidate, rounds=5, warmup_rounds=1) -> Ratio`` on this test's benchmark."""
    return lambda baseline, candidate, **kw: timed_ratio(benchmark, baseline, candidate, **kw)


# -- peak memory ---------------------------------------------------------------------------------------

_MEMORY_DRIVER = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, {bench!r})
    import torch
    torch.set_num_threads({threads})
    from {module} import {function} as stage
    run = stage(**json.loads({kwargs!r}))   # builds everything; returns the callable to measure

    def status(key):  # kB in /proc/self/status, or None off Linux
        try:
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        except OSError:
            return None

    try:  # reset the high-water mark, so the peak is the stage's own, not the model load's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = status("VmHWM") is not None
    except OSError:
        reset = False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = status("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    after = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {{"peak_rss_mib": after / 1024, "added_peak_rss_mib": (after - before) / 1024, "seconds": seconds,
            "stage_peak": reset}}
    if cuda:
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("PEAK-MEMORY " + json.dumps(out))
""")


def peak_memory(module: str, function: str, timeout: float = 900, **kwargs) -> dict:
    """Peak memory of one stage in a fresh process: ``module.function(**kwargs)`` (a module in
    benchmarks/) builds the stage and returns a no-argument callable. On Linux the RSS high-water mark is
    reset after the build (``/proc/self/clear_refs``), so ``peak_rss_mib`` is the peak while the callable
    ran and ``added_peak_rss_mib`` that peak over the RSS it started from (elsewhere: the process's peak,
    and what the callable added to it); on a GPU also ``torch.cuda.max_memory_allocated``."""
    code = _MEMORY_DRIVER.format(bench=str(BENCH_DIR), threads=THREADS, module=module, function=function,
                                 kwargs=json.dumps(kwargs))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK-MEMORY ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"peak-memory run of {module}.{function}({kwargs}) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("PEAK-MEMORY "))


def meets_target(value: float, target: float, *, lower_is_better: bool = False) -> bool:
    """Whether a measured ratio meets its target, allowing ``RATIO_MARGIN`` (a fraction of the target).
    Always true with ``--benchmark-disable``: one untimed round is no measurement to hold to a target."""
    if DISABLED:
        return True
    if lower_is_better:
        return value <= target * (1 + RATIO_MARGIN)
    return value >= target * (1 - RATIO_MARGIN)


def report(name: str, line: str) -> None:
    """Print a figure so ``pytest benchmarks -s`` (and -rA) shows it."""
    print(f"\n[{name}] {line}")
