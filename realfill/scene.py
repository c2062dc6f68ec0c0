"""Scenes in the RealBench layout: ``ref/*``, ``target/target.png``, ``target/mask.png``, ``target/gt.png``.

Images load as HxWx3 uint8 sRGB whatever their file holds (any format Pillow reads, whatever the file's name
says; RGB, RGBA, grayscale, 16-bit scaled by the bit depth; EXIF orientation applied; an embedded ICC
profile converted to sRGB). Every problem is a :class:`UserError` naming the file.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from realfill.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Scene:
    root: Path
    name: str
    references: list[np.ndarray]
    reference_paths: list[Path]
    target: np.ndarray
    mask: np.ndarray  # HxW bool, True = the region to fill
    gt: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the target."""
        return self.target.shape[1], self.target.shape[0]

    def masked_target(self) -> np.ndarray:
        """The target with its region to fill blanked to mid-gray, as shown in contact sheets."""
        out = self.target.copy()
        out[self.mask] = 127
        return out


#: the full scale of Pillow's integer single-channel modes, by the file's bit depth (never by the content: a
#: 16-bit image whose brightest pixel is 200/65535 is nearly black, not bright). "I" is what Pillow gives
#: for 16-bit PNG, PGM and TIFF data as well, so 16 bits is its scale too (a rare 32-bit integer TIFF clips)
_INTEGER_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}
#: the profile every image is converted to while it loads (what the models, metrics and PNGs written assume)
_SRGB = None


def _eight_bit(image: Image.Image) -> Image.Image:
    """An 8-bit image of the same picture: 16-bit (and 32-bit integer) gray scaled by the mode's full
    scale, float gray ("F", e.g. a float TIFF) taken as 0..1; every other mode as it is (Pillow decodes 16-bit
    RGB and RGBA PNGs to 8 bits itself, by their bit depth)."""
    if image.mode in _INTEGER_FULL_SCALE:
        array = np.asarray(image).astype(np.float64) / _INTEGER_FULL_SCALE[image.mode]
    elif image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
    else:
        return image
    return Image.fromarray(np.clip(array * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def _open(path: Path) -> Image.Image:
    if path.is_symlink() and not path.exists():
        raise UserError(f"{path}: a broken link (to {os.readlink(path)}); fix or remove it")
    if path.is_dir():
        raise UserError(f"{path}: a folder, not an image file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        image = Image.open(path)
        image.load()
    except PermissionError:
        raise UserError(f"{path}: cannot read it (permission denied)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({type(exc).__name__})") from None
    return ImageOps.exif_transpose(image)


def _srgb(image: Image.Image, icc: bytes | None, path: Path) -> Image.Image:
    """``image`` (8-bit) as RGB in sRGB: through its embedded ICC profile where it has one (phone photos
    carry Display P3 or others; LittleCMS through Pillow's ImageCms), else its values as they are. A profile
    LittleCMS cannot read or apply to the image's channels is an error naming the file, not a silent
    change of colours."""
    if not icc:
        return image.convert("RGB")
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.createProfile("sRGB")
    if image.mode not in ("RGB", "L", "CMYK"):  # alpha dropped, palettes expanded, before the transform
        image = image.convert("L" if image.mode in ("LA", "La", "1", "I", "F") else "RGB")
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: its embedded ICC profile cannot be applied ({str(exc) or type(exc).__name__}); "
                        "save the image in sRGB, or without a profile") from None


def read_rgb(path: Path) -> np.ndarray:
    """Any image Pillow reads as HxWx3 uint8 sRGB: alpha dropped, gray replicated, 16-bit scaled by its bit
    depth, an embedded ICC profile converted to sRGB."""
    image = _open(Path(path))
    icc = image.info.get("icc_profile")
    return np.asarray(_srgb(_eight_bit(image), icc, Path(path)))


def read_mask(path: Path) -> tuple[np.ndarray, str | None]:
    """A mask as HxW bool (white = fill). Non-binary masks are thresholded at half range, with a note."""
    image = _open(Path(path))
    image = _eight_bit(image)  # 16-bit by its bit depth
    if image.mode != "L":
        image = image.convert("L")
    values = np.asarray(image)
    if values.ndim == 3:
        values = values[..., 0]
    levels = np.unique(values)
    mask = values >= 128
    if not mask.any() and levels.size > 1:  # drawn with 0/1 (or other dark values): nothing reaches 128
        raise UserError(f"{path}: the mask has nothing to fill (no white pixels; its brightest value is "
                        f"{int(levels.max())}, and white = 255 marks the region to fill)")
    note = None
    if not set(levels.tolist()) <= {0, 255}:
        note = f"{path}: mask is not binary ({len(levels)} gray levels); thresholded at 128"
    return mask, note


def list_images(folder: Path) -> list[Path]:
    """The images in ``folder`` by name; a link among them that leads nowhere is listed too, so that
    reading it fails with its name instead of the image being skipped without a word."""
    return sorted(p for p in folder.iterdir()
                  if (p.is_file() or (p.is_symlink() and not p.exists())) and p.suffix.lower() in IMAGE_SUFFIXES)


def _image_suffixes() -> set[str]:
    """Every file-name suffix Pillow knows an image format by (.png, .jpg, .tif, .webp, .bmp, ...)."""
    from PIL import Image

    return set(Image.registered_extensions())


def reference_files(ref_dir: Path) -> tuple[list[Path], list[str]]:
    """The references under ``ref_dir`` and a note for each entry that is not one, so nothing is dropped
    without a word: every file Pillow reads is a reference whatever its name (a TIFF, a JPEG named .png); an
    entry *named* like an image that is not a readable one (a folder x.png, a broken link, a damaged file)
    is an error, since the run would go on without a reference the user meant; anything else (notes.txt,
    .DS_Store) is named in a note and the run goes on: it was never a reference."""
    suffixes = _image_suffixes()
    paths, notes = [], []
    for entry in sorted(ref_dir.iterdir()):
        named_as_image = entry.suffix.lower() in suffixes
        if entry.is_file():
            try:
                with Image.open(entry):
                    pass
                paths.append(entry)
                continue
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
                if named_as_image:
                    paths.append(entry)  # reading it fails with its name and why
                    continue
        elif named_as_image or (entry.is_symlink() and not entry.exists()):
            paths.append(entry)  # a folder or a broken link named as an image: reading it names it
            continue
        what = "a folder" if entry.is_dir() else "not an image Pillow reads"
        notes.append(f"{entry}: {what}, so not a reference; ignored")
    return paths, notes


def load_scene(path: str | Path, max_references: int = 5) -> Scene:
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such scene folder (expected ref/ and target/ inside)")
    ref_dir = root / "ref"
    ref_paths, ref_notes = reference_files(ref_dir) if ref_dir.is_dir() else ([], [])
    if not ref_paths:
        raise UserError(f"{ref_dir}: no reference images (any format Pillow reads); a scene needs 1-{max_references}")
    if len(ref_paths) > max_references:
        raise UserError(
            f"{ref_dir}: {len(ref_paths)} references, more than max_references={max_references}; "
            "remove some or raise it with --set max_references=N"
        )
    target_path = root / "target" / "target.png"
    mask_path = root / "target" / "mask.png"
    target = read_rgb(target_path)
    mask, note = read_mask(mask_path)
    notes = ref_notes + ([note] if note else [])
    if mask.shape != target.shape[:2]:
        raise UserError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but the target is "
            f"{target.shape[1]}x{target.shape[0]}; they must be the same size"
        )
    if not mask.any():
        raise UserError(f"{mask_path}: the mask has nothing to fill (no white pixels)")
    if mask.all():
        raise UserError(f"{mask_path}: the mask covers the whole target; nothing is known to complete from")
    references = [read_rgb(p) for p in ref_paths]
    gt = None
    gt_path = root / "target" / "gt.png"
    if os.path.lexists(gt_path):  # a broken link is an error naming it, not "no ground truth"
        gt = read_rgb(gt_path)
        if gt.shape != target.shape:
            raise UserError(
                f"{gt_path}: ground truth is {gt.shape[1]}x{gt.shape[0]} but the target is "
                f"{target.shape[1]}x{target.shape[0]}"
            )
    return Scene(root, root.resolve().name, references, ref_paths, target, mask, gt, notes)
