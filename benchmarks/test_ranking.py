"""Seed-selection speed: reference features extracted once (and each candidate's once) against the naive
path that extracts both images' features for every (candidate, reference) pair.

N=16 candidates of a real two-view scene (skimage's stereo_motorcycle at 256 px) against K=3 references,
per ranker available offline. Both paths are timed in the same run, models loaded beforehand; the cached
path goes through pytest-benchmark, the naive path through the same clock, and the test reports and checks
the ratio of medians (target >= 1.8x). The torch rankers run on one thread (``threads = 1``). Peak memory each path adds is measured in a fresh process
(``ru_maxrss`` after ranking minus before). Both paths must give the same scores.

    python -m pytest benchmarks/test_ranking.py -q -p no:cacheprovider --benchmark-columns=median,rounds
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ranking_case import N_CANDIDATES, build_case, make_ranker, rank_once  # noqa: E402
from conftest import MIN_ROUND_S, inner_loops, meets_target  # noqa: E402

from realfill.errors import MissingWeightsError  # noqa: E402

TARGET_RATIO = 1.8
#: one torch thread for both paths: with 2 threads on this shared 2-core machine, OpenMP oversubscription
#: slowed LightGlue's matching ~40x and drowned the comparison in noise
RANKERS = {
    "sift": ({"name": "sift"}, 3),
    "warp": ({"name": "warp"}, 3),  # cache_features: the references aligned once, not for every candidate
    "lightglue-disk": ({"name": "lightglue", "features": "disk", "threads": 1}, 2),
    "lightglue-aliked": ({"name": "lightglue", "features": "aliked", "threads": 1}, 2),
}
#: the calibration each ranker's median is divided by (benchmarks/calibration.py): OpenCV's passes over the
#: images (SIFT's pyramids, the warp's remaps) stream through memory; LightGlue is dense torch arithmetic
KIND = {"sift": "memory", "warp": "memory", "lightglue-disk": "compute", "lightglue-aliked": "compute"}
CASE = Path(__file__).resolve().parent / "_ranking_case.py"
#: ``REALFILL_BENCH_PLANT_SLOWDOWN=<ranker id>`` ranks twice in that ranker's timed (cached) path: a planted 2x
#: slowdown of the code the gate measures, with the same scores, for tests/test_bench_gate.py to show the
#: gate failing on it
PLANTED = os.environ.get("REALFILL_BENCH_PLANT_SLOWDOWN", "")


def _peak_memory(settings: dict) -> dict:
    """Peak memory that ranking adds, in a fresh process; NaN when ``REALFILL_BENCH_MEMORY=0`` (scripts/bench.sh
    --ci: the fresh processes rank every candidate again, about two of the subset's six minutes)."""
    if os.environ.get("REALFILL_BENCH_MEMORY", "1") == "0":
        return {"peak_added_mib": float("nan")}
    out = subprocess.run([sys.executable, str(CASE), json.dumps(settings)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("ranker_id", [pytest.param(r, marks=pytest.mark.calibration(KIND[r])) for r in RANKERS])
def test_cached_reference_features_vs_naive(ranker_id, benchmark):
    settings, rounds = RANKERS[ranker_id]
    scene, candidates = build_case()
    try:
        cached = make_ranker({**settings, "cache_features": True})
        naive = make_ranker({**settings, "cache_features": False})
    except MissingWeightsError as exc:
        pytest.skip(str(exc))

    cached_times = []
    planted = 2 if PLANTED == ranker_id else 1

    def rank_cached():
        for _ in range(planted - 1):
            rank_once(cached, scene, candidates)
        return rank_once(cached, scene, candidates)

    rank_cached()  # warm-up
    inner = inner_loops(rank_cached, MIN_ROUND_S)  # a round of at least MIN_ROUND_S (warp: ~60 ms a pass)

    def timed_cached():
        start = time.perf_counter()
        for _ in range(inner):
            scores = rank_cached()
        cached_times.append((time.perf_counter() - start) / inner)
        return scores

    cached_scores = benchmark.pedantic(timed_cached, rounds=rounds)
    naive_times = []
    for _ in range(rounds):
        start = time.perf_counter()
        naive_scores = rank_once(naive, scene, candidates)
        naive_times.append(time.perf_counter() - start)
    assert [s.score for s in naive_scores] == [s.score for s in cached_scores]

    cached_median = statistics.median(cached_times)
    ratio = statistics.median(naive_times) / cached_median
    memory = {path: _peak_memory({**settings, "cache_features": path == "cached"}) for path in ("cached", "naive")}
    benchmark.extra_info.update({
        "inner_loops": inner, "planted_slowdown": planted,
        "candidates": N_CANDIDATES, "references": len(scene.references),
        "cached_median_s": cached_median, "naive_median_s": statistics.median(naive_times),
        "speedup": ratio,
        "peak_added_mib_cached": memory["cached"]["peak_added_mib"],
        "peak_added_mib_naive": memory["naive"]["peak_added_mib"],
    })
    print(f"\n{ranker_id}: cached {cached_median:.2f}s, naive {statistics.median(naive_times):.2f}s, "
          f"speedup {ratio:.2f}x; peak memory added: cached {memory['cached']['peak_added_mib']:.0f} MiB, "
          f"naive {memory['naive']['peak_added_mib']:.0f} MiB"
          + (" (not measured: REALFILL_BENCH_MEMORY=0)" if math.isnan(memory["cached"]["peak_added_mib"]) else ""))
    assert meets_target(ratio, TARGET_RATIO), ratio
