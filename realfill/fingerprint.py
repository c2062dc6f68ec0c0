"""What a resumed run folder must have been made from: the same scene, by content, and the same settings.

A scene's fingerprint is a digest of each image's decoded pixels (the references in order, the target, the
mask), so a moved or renamed scene folder still resumes and a re-saved PNG with the same pixels is the same
scene; the ground truth is left out (it decides no byte of the run, only the comparison made afresh after
it). ``run.json`` carries it (:func:`realfill.run.write_run_record`); ``--resume`` compares it before the run
folder's lock is taken, so a mismatch touches nothing.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import numpy as np

from realfill.config_files import dotted_keys
from realfill.errors import UserError

FINGERPRINT_KEY = "scene_fingerprint"


def image_digest(array: np.ndarray) -> str:
    """sha256 of an image's shape, dtype and pixels (the first 16 hex digits)."""
    digest = hashlib.sha256(f"{array.shape}{array.dtype}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def scene_fingerprint(scene) -> dict:
    return {"references": [image_digest(r) for r in scene.references], "target": image_digest(scene.target),
            "mask": image_digest(scene.mask)}


def scene_difference(saved: dict, now: dict) -> list[str]:
    """The parts of the scene that differ, in words (empty: the same scene)."""
    parts = []
    refs_then, refs_now = saved.get("references"), now["references"]
    if refs_then != refs_now:
        if not isinstance(refs_then, list) or len(refs_then) != len(refs_now):
            count = len(refs_then) if isinstance(refs_then, list) else "?"
            parts.append(f"references ({count} then, {len(refs_now)} now)")
        else:
            changed = [str(i + 1) for i, (a, b) in enumerate(zip(refs_then, refs_now)) if a != b]
            parts.append(f"reference{'s' if len(changed) > 1 else ''} {', '.join(changed)}")
    parts += [key for key in ("target", "mask") if saved.get(key) != now[key]]
    return parts


#: what to do when a run folder cannot be trusted with a scene (commands that write a run folder)
START_FRESH = "start fresh with another --out (or delete the folder)"


def _has_content(directory: Path) -> bool:
    """Whether ``directory`` holds anything a run wrote (its lock and killed writers' temporaries aside)."""
    try:
        return any(not p.name.startswith(".realfill") for p in directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def check_same_scene(run_dir: Path, scene, record_name: str = "run.json", *, hint: str = START_FRESH) -> None:
    """Refuse to use ``run_dir`` with a scene other than the one it was made from (one line naming the parts
    that differ). A folder that does not exist or holds nothing yet has nothing to check. A folder with
    files but no usable record (missing, unreadable, not a JSON object, or written before fingerprints) is
    refused too: it cannot prove what it was made from, so it is never trusted by default (``hint`` says
    what to do instead)."""
    run_dir = Path(run_dir)
    if not _has_content(run_dir):
        return
    path = run_dir / record_name
    why = None
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        record, why = None, f"{run_dir}: holds no {record_name}"
    except (OSError, ValueError) as exc:
        reason = "not valid JSON" if isinstance(exc, ValueError) else (exc.strerror or type(exc).__name__)
        record, why = None, f"{path}: unreadable ({reason})"
    if why is None and not isinstance(record, dict):
        why = f"{path}: not a run record (a JSON {type(record).__name__}, not an object)"
    saved = record.get(FINGERPRINT_KEY) if isinstance(record, dict) else None
    if why is None and not (isinstance(saved, dict) and isinstance(saved.get("references"), list)
                            and isinstance(saved.get("target"), str) and isinstance(saved.get("mask"), str)):
        why = f"{path}: records no scene fingerprint (written by an older realfill, or edited)"
    if why is not None:
        raise UserError(f"{why}, so the scene the folder was made from cannot be checked; {hint}")
    differs = scene_difference(saved, scene_fingerprint(scene))
    if differs:
        verb = "differ" if len(differs) > 1 or differs[0].startswith("references") else "differs"
        raise UserError(f"{run_dir}: made from another scene ({record.get('scene', '?')}): its "
                        f"{', '.join(differs)} {verb} from {scene.root}'s; use it with that scene, or {hint}")


def scene_key(scene) -> str:
    """The scene's fingerprint as one short string (for keys that must change with the scene's content)."""
    return hashlib.sha256(json.dumps(scene_fingerprint(scene), sort_keys=True).encode()).hexdigest()[:16]


def config_difference(saved_text: str, now_text: str) -> list[str]:
    """The dotted keys whose values differ between two dumped configs (``key: then -> now``)."""
    try:
        then = dotted_keys(tomllib.loads(saved_text))
    except (tomllib.TOMLDecodeError, ValueError):
        return ["(the saved config.toml is not valid TOML)"]
    now = dotted_keys(tomllib.loads(now_text))
    return [f"{key}: {then.get(key, 'unset')!r} then, {now.get(key, 'unset')!r} now"
            for key in sorted(set(then) | set(now)) if then.get(key) != now.get(key)]


__all__ = ["FINGERPRINT_KEY", "check_same_scene", "config_difference", "image_digest", "scene_fingerprint",
           "scene_difference", "scene_key", "START_FRESH"]
