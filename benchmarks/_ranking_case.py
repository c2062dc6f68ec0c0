"""The benchmark's case: N candidates of a real two-view scene against K references, and one ranking pass.

Run as a script (``python benchmarks/_ranking_case.py SETTINGS_JSON``) it ranks once in a fresh process
and prints, as JSON, the peak memory that ranking added: the largest resident set size sampled every
millisecond while ranking, minus the resident set size just before (models already loaded).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_CANDIDATES = 16
WIDTH = 256


def build_case(n: int = N_CANDIDATES):
    """skimage's stereo_motorcycle (``tests/material.py``) and ``n`` candidates: the true right view and
    noisy / blurred / shifted versions of its hole."""
    if str(ROOT) not in sys.path:  # run as a script, only benchmarks/ is on the path
        sys.path.insert(0, str(ROOT))
    from tests.material import stereo_motorcycle_scene

    scene = stereo_motorcycle_scene(WIDTH)
    right, mask = scene.gt, scene.mask
    rng = np.random.default_rng(0)
    candidates = []
    for i in range(n):
        hole = right.astype(np.float32)
        if i % 4 == 1:
            hole += rng.normal(0, 8 * i, hole.shape)
        elif i % 4 == 2:
            hole = cv2.GaussianBlur(hole, (0, 0), 1 + i / 4)
        elif i % 4 == 3:
            hole = np.roll(hole, i, axis=1)
        candidate = right.copy()
        candidate[mask] = np.clip(hole, 0, 255).astype(np.uint8)[mask]
        candidates.append(candidate)
    return scene, candidates


def make_ranker(settings: dict):
    from realfill.plugins import RealfillPlugins

    registry = RealfillPlugins(autoload=False).registry("ranker")
    ranker = registry.create(registry.get(settings["name"]).Config(**settings))
    ranker.load()
    return ranker


def rank_once(ranker, scene, candidates) -> list:
    ranker.prepare(scene.references, scene.mask)
    return ranker.score(candidates)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads())
    settings = json.loads(sys.argv[1])
    scene, candidates = build_case()
    ranker = make_ranker(settings)
    import os

    def rss() -> int:  # Linux: resident pages of this process (no psutil dependency)
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    scores = rank_once(ranker, scene, candidates)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss())
    print(json.dumps({"peak_added_mib": (peak[0] - before) / 2**20, "rss_before_mib": before / 2**20,
                      "seconds": seconds, "scores": [s.score for s in scores]}))
