"""How fast this machine is, measured in the same run as the benchmarks: two fixed kernels, one per kind.

The benchmark gate (``benchmarks/gate.py``) times these at the start and the end of its run and stores them
with every saved baseline; it compares a benchmark's median divided by the calibration of its kind against
the saved median divided by the saved calibration, so a slower (or faster) machine moves both alike and
only the code's own change is left. Kinds:

- ``compute``: a float32 matrix product (384 x 384 by 384 x 384) on ``REALFILL_BENCH_THREADS`` torch threads
  (the benchmarks' thread count): the dense arithmetic of the training, sampling and LightGlue cases.
- ``memory``: a float32 add over 8 M elements (three 32 MiB arrays, more than any cache here), one thread:
  streaming through memory, what OpenCV's image passes (SIFT pyramids, the warp's remaps) mostly do.

Each value is seconds per call of the kernel: the loop count is calibrated so one sample lasts about
``TARGET_S`` (0.1 s, as pyperf does), then the median of ``SAMPLES`` samples is taken.

    python benchmarks/calibration.py        # prints {"compute": s, "memory": s, ...} as JSON
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable

#: the calibration kinds a benchmark may declare (``@pytest.mark.calibration(kind)``), and ``ratio``:
#: the benchmark is judged by its in-run ratio alone (no absolute median is compared)
KINDS = ("compute", "memory")
RATIO_ONLY = "ratio"
#: seconds one sample lasts (``REALFILL_BENCH_CALIBRATION_S``; tests of the gate's retries shorten it)
TARGET_S = float(os.environ.get("REALFILL_BENCH_CALIBRATION_S", "0.1"))
SAMPLES = 5
THREADS = int(os.environ.get("REALFILL_BENCH_THREADS", "1"))


def _kernels() -> dict[str, Callable[[], object]]:
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(384, 384, generator=generator)
    b = torch.rand(384, 384, generator=generator)
    out = torch.empty(384, 384)
    x = torch.rand(8 * 2**20, generator=generator)
    y = torch.rand(8 * 2**20, generator=generator)
    z = torch.empty(8 * 2**20)
    return {"compute": lambda: torch.mm(a, b, out=out), "memory": lambda: torch.add(x, y, out=z)}


def _threads(kind: str) -> int:
    return THREADS if kind == "compute" else 1


def time_kernel(kernel: Callable[[], object], target_s: float = TARGET_S, samples: int = SAMPLES) -> dict:
    """Seconds per call of ``kernel``: loops per sample calibrated to last about ``target_s``, median of
    ``samples`` samples (after one warm-up sample)."""
    kernel()
    loops = 1
    while True:  # double the loop count until one sample lasts a tenth of the target, then scale
        start = time.perf_counter()
        for _ in range(loops):
            kernel()
        elapsed = time.perf_counter() - start
        if elapsed >= target_s / 10:
            break
        loops *= 2
    loops = max(1, round(loops * target_s / elapsed))
    per_call = []
    for _ in range(samples + 1):
        start = time.perf_counter()
        for _ in range(loops):
            kernel()
        per_call.append((time.perf_counter() - start) / loops)
    per_call = per_call[1:]
    return {"seconds": statistics.median(per_call), "loops": loops,
            "spread": (max(per_call) - min(per_call)) / statistics.median(per_call)}


def measure(target_s: float = TARGET_S, samples: int = SAMPLES) -> dict:
    """``{kind: seconds per call}`` for every kind, plus ``threads``, ``loops`` and the load average."""
    import torch

    old = torch.get_num_threads()
    values: dict = {"threads": THREADS, "loops": {}, "spread": {}, "load_average_1m": round(os.getloadavg()[0], 2)}
    try:
        for kind, kernel in _kernels().items():
            torch.set_num_threads(_threads(kind))
            timed = time_kernel(kernel, target_s, samples)
            values[kind] = timed["seconds"]
            values["loops"][kind] = timed["loops"]
            values["spread"][kind] = round(timed["spread"], 3)
    finally:
        torch.set_num_threads(old)
    return values


def combine(samples: list[dict]) -> dict:
    """One calibration from several (the start and the end of a run): the median of each kind."""
    return {kind: statistics.median(s[kind] for s in samples) for kind in KINDS if all(kind in s for s in samples)}


if __name__ == "__main__":
    json.dump(measure(), sys.stdout)
    print()
