"""Evaluate a result image against a scene's ground truth with the registered metrics.

Every registered metric runs; one that cannot run here (missing weights) or fails is reported under
``skipped`` with the reason, and the others go on. A run folder's evaluation lands in ``metrics.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from realfill.atomic import atomic_write_text
from realfill.errors import UserError
from realfill.fingerprint import check_same_scene
from realfill.scene import Scene, load_scene, read_rgb
from realfill.seed_selection import read_ranking

METRICS_FILE = "metrics.json"
RUN_RECORD = "run.json"  # written by the ablation engine and the baselines: {"scene": PATH, ...}
#: the paper's pixel metrics, the weight-free vif and sharpness, the paper's learned ones; other plugins' follow, by name
PAPER_ORDER = ("psnr", "ssim", "ms-ssim", "vif", "sharpness", "lpips", "dreamsim", "dino", "clip")


@dataclass
class Evaluation:
    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # metric name -> why it did not run
    higher_is_better: dict[str, bool] = field(default_factory=dict)  # value name -> direction

    def as_dict(self) -> dict:
        return {
            "values": {k: (v if math.isfinite(v) else None) for k, v in self.values.items()},
            "non_finite": {k: str(v) for k, v in self.values.items() if not math.isfinite(v)},
            "skipped": dict(self.skipped),
            "higher_is_better": dict(self.higher_is_better),
        }


def parse_metric_weights(items: list[str]) -> dict[str, Path]:
    """``["dino=/models/dino"]`` -> ``{"dino": Path("/models/dino")}``."""
    weights = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--metric-weights {item!r}: expected NAME=PATH, e.g. --metric-weights dino=/models/dino")
        weights[name.strip()] = Path(path).expanduser()
    return weights


def build_metrics(plugins, names: list[str] | None = None, weights: dict[str, Path] | None = None) -> list:
    """Instantiate the named metrics (default: every registered one), with local weight paths if given."""
    registry = plugins.registry("metric")
    if not names:
        names = sorted(registry.names(), key=lambda n: (PAPER_ORDER.index(n) if n in PAPER_ORDER else len(PAPER_ORDER), n))
    weights = weights or {}
    for name in weights:
        if name not in names:
            registry.get(name)  # unknown names raise with the known ones
    metrics = []
    for name in names:
        cls = registry.get(name)
        settings = {}
        if name in weights:
            if "weights" not in cls.Config.model_fields:
                raise UserError(f"--metric-weights {name}=...: metric '{name}' takes no weights")
            settings["weights"] = weights[name]
        metrics.append(cls(cls.Config(**settings)))
    return metrics


def evaluate_images(result: np.ndarray, gt: np.ndarray, mask: np.ndarray, metrics: list) -> Evaluation:
    """All ``metrics`` on one result; shapes must agree (HxWx3 uint8 images, HxW bool mask)."""
    if result.shape != gt.shape:
        raise UserError(
            f"result is {result.shape[1]}x{result.shape[0]} but the ground truth is {gt.shape[1]}x{gt.shape[0]}"
        )
    evaluation = Evaluation()
    for metric in metrics:
        reason = metric.available()
        if reason is not None:
            evaluation.skipped[metric.name] = reason
            continue
        try:
            values = metric.compute(result, gt, mask)
        except Exception as exc:  # noqa: BLE001 - one broken metric must not lose the others
            evaluation.skipped[metric.name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        for key, value in values.items():
            evaluation.values[key] = float(value)
            evaluation.higher_is_better[key] = metric.higher_is_better
    return evaluation


def evaluate_result(result_path: Path, scene: Scene, metrics: list) -> Evaluation:
    if scene.gt is None:
        raise UserError(f"{scene.root / 'target' / 'gt.png'}: no ground truth; evaluation needs one")
    result = read_rgb(result_path)
    if result.shape != scene.gt.shape:
        raise UserError(f"{result_path}: the result is {result.shape[1]}x{result.shape[0]} but the ground truth "
                        f"is {scene.gt.shape[1]}x{scene.gt.shape[0]}; evaluate a result at the target's size")
    return evaluate_images(result, scene.gt, scene.mask, metrics)


def scene_of_run(run_dir: Path) -> Path | None:
    """The scene a run folder was made from, if it recorded one (``run.json``: ``{"scene": PATH}``)."""
    record = Path(run_dir) / RUN_RECORD
    if record.is_file():
        try:
            scene = json.loads(record.read_text()).get("scene")
        except (json.JSONDecodeError, AttributeError):
            raise UserError(f"{record}: not a valid run record (JSON object with a 'scene' path)") from None
        if scene:
            path = Path(scene)
            return path if path.is_absolute() else (Path(run_dir) / path).resolve()
    return None


#: what seed selection is judged by: the ranker's pick against the samples it chose from
SELECTION_METRIC, SELECTION_VALUE = "psnr", "psnr_masked"


def selection_stats(scene: Scene, ranking: list[dict], sample_dir: Path, metrics: list) -> dict | None:
    """How the ranker's pick (rank 1) scores against the samples it was chosen from, by masked PSNR
    against the ground truth: the pick's value, the samples' mean, best and worst, where the pick stands,
    and whether it beats the mean (a ranker that helps does more often than not; one that ranks at random
    does half the time). None when it cannot be measured: no ground truth, no ``psnr`` metric among
    ``metrics``, fewer than two samples, or a ranked sample missing from ``sample_dir``."""
    metric = next((m for m in metrics if m.name == SELECTION_METRIC), None)
    if scene.gt is None or metric is None or len(ranking) < 2:
        return None
    paths = [Path(sample_dir) / entry["file"] for entry in ranking]
    if not all(p.is_file() for p in paths):
        return None
    values = [float(metric.compute(read_rgb(p), scene.gt, scene.mask)[SELECTION_VALUE]) for p in paths]
    pick, mean = values[0], float(np.mean(values))
    return {
        "metric": SELECTION_VALUE,
        "samples": len(values),
        "pick": pick,
        "mean": mean,
        "best": max(values),
        "worst": min(values),
        "pick_minus_mean": pick - mean,
        "pick_beats_mean": pick > mean,
        "pick_place": 1 + sum(v > pick for v in values),  # 1 = the pick is the best sample
        "by_rank": values,
    }


#: which images of a run are scored, and at what size (``--protocol``): the ranked pick at the target's size
#: (this platform's default), or every sample averaged, at the target's size or resized to 512x512 as the
#: public re-implementation eric15342335/realfill scores RealBench
PROTOCOLS = {
    "pick": "one image per scene and method, the ranked pick (`result.png`, the correspondence ranker's best "
            "sample), at the target's own size against `target/gt.png` (no resizing)",
    "samples-mean": "every sample of a run (a baseline: its one result), each value averaged over them, at the "
                    "target's own size against `target/gt.png` (no resizing)",
    "samples-mean-512": "every sample of a run (a baseline: its one result), each value averaged over them, the "
                        "sample, `target/gt.png` and the mask resized to 512x512 first (as eric15342335/realfill "
                        "scores RealBench)",
}
PROTOCOL_SIDE = 512


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol}: unknown; known protocols: {', '.join(PROTOCOLS)}")
    return protocol


def _resized(image: np.ndarray, side: int, *, mask: bool = False) -> np.ndarray:
    if mask:
        return np.asarray(Image.fromarray(image.astype(np.uint8) * 255).resize((side, side), Image.NEAREST)) > 127
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC))


def evaluate_mean(paths: list[Path], scene: Scene, metrics: list, side: int | None = None) -> Evaluation:
    """Every image of ``paths`` scored (resized to ``side`` x ``side`` first, where given), each value averaged."""
    gt, mask = scene.gt, scene.mask
    if side is not None:
        gt, mask = _resized(gt, side), _resized(mask, side, mask=True)
    scored = []
    for path in paths:
        image = read_rgb(path)
        if image.shape != scene.gt.shape:
            raise UserError(f"{path}: {image.shape[1]}x{image.shape[0]}, but the ground truth is "
                            f"{scene.gt.shape[1]}x{scene.gt.shape[0]}")
        scored.append(evaluate_images(_resized(image, side) if side is not None else image, gt, mask, metrics))
    mean = Evaluation(skipped=dict(scored[0].skipped), higher_is_better=dict(scored[0].higher_is_better))
    for key in scored[0].values:
        mean.values[key] = float(np.mean([e.values[key] for e in scored if key in e.values]))
    return mean


def evaluate_run(run_dir: Path, metrics: list, scene_path: Path | None = None, max_references: int = 5,
                 sample_dir: Path | None = None, protocol: str = "pick") -> dict:
    """Evaluate ``RUN_DIR/result.png`` against its scene; write and return ``RUN_DIR/metrics.json``.

    With a ``ranking.json`` and its samples (in ``sample_dir``, default ``RUN_DIR/samples``), the record
    also holds ``selection``: the pick against the samples' mean (:func:`selection_stats`). ``protocol``
    (:data:`PROTOCOLS`) says which images are scored and at what size; the record says it too."""
    check_protocol(protocol)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    result_path = run_dir / "result.png"
    if not result_path.is_file():
        raise UserError(f"{result_path}: no result in this run folder (is the run finished?)")
    scene_path = scene_path or scene_of_run(run_dir)
    if scene_path is None:
        raise UserError(f"{run_dir}: the run does not record its scene ({RUN_RECORD}); pass --scene SCENE")
    scene = load_scene(scene_path, max_references=max_references)
    check_same_scene(run_dir, scene, hint=f"evaluate the image alone with `realfill evaluate SCENE --result "
                     f"{result_path}` (nothing is written into the folder)")
    ranking_path = run_dir / "ranking.json"
    scored = [result_path]
    if protocol == "pick":
        evaluation = evaluate_result(result_path, scene, metrics)
    else:
        evaluate_result(result_path, scene, [])  # no ground truth, or a result of another size: one line
        if ranking_path.is_file():
            scored = [Path(sample_dir or run_dir / "samples") / entry["file"] for entry in read_ranking(ranking_path)]
        evaluation = evaluate_mean(scored, scene, metrics, PROTOCOL_SIDE if protocol.endswith("-512") else None)
    record = {"result": str(result_path), "scene": str(Path(scene_path).resolve()), **evaluation.as_dict(),
              "protocol": protocol, "scored_images": len(scored)}
    if ranking_path.is_file():
        selection = selection_stats(scene, read_ranking(ranking_path), sample_dir or run_dir / "samples", metrics)
        if selection is not None:
            record["selection"] = selection
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(record, indent=2) + "\n")
    return record
