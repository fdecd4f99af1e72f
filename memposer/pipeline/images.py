"""Stage 1: read images robustly (EXIF orientation, grey/RGBA/16-bit/palette), resize by config.

The one image loader of the pipeline: :func:`decode_image` (decode + orient, once per image per
run) and :func:`prepare_image` (resize + convert, per consumer); :func:`load_image` does both.
Unreadable or truncated files return ``None`` with a logged warning; they never raise.
Coordinates: keypoints are expressed in the *oriented, full-resolution* image (what COLMAP calibrates);
``LoadedImage.scale`` maps resized pixels back to it.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

default_conf = {
    "resize_max": 1024,  # longest side after resizing; 0 or None keeps the original size
    "grayscale": False,
}


@dataclass
class LoadedImage:
    name: str
    image: np.ndarray  # (H, W, 3) or (H, W) float32 in [0, 1], resized
    size: tuple  # (width, height) of the oriented original image
    scale: float  # resized pixel * (1/scale) = original pixel; i.e. resized = original * scale
    focal: Optional[float] = None  # focal length prior in original pixels (from EXIF), if any


_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _resize(img: Image.Image, size: tuple) -> Image.Image:
    return img.resize(size, Image.BILINEAR)


def _to_float(img: Image.Image, grayscale: bool) -> np.ndarray:
    """Any PIL mode -> float32 in [0, 1], RGB (or grey)."""
    if img.mode == "F":  # already normalised high-depth data (see load_image)
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return arr if grayscale else np.repeat(arr[..., None], 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # composite on grey so that transparent areas carry no fake texture
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert("L" if grayscale else "RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def _normalise_high_depth(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float images -> mode ``F`` in [0, 1]."""
    arr = np.asarray(img, dtype=np.float32)
    hi = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and arr.max() > 255) else (255.0 if img.mode == "I" else max(1.0, float(arr.max())))
    return Image.fromarray(arr / hi, mode="F")


def _exif_focal(img: Image.Image, width: int, height: int) -> Optional[float]:
    """Focal length in pixels from the 35 mm-equivalent EXIF tag, if present and sane."""
    try:
        exif = img.getexif()
        f35 = exif.get_ifd(0x8769).get(41989) or exif.get(41989)  # FocalLengthIn35mmFilm
        if f35 and float(f35) > 0:
            f = float(f35) / 36.0 * max(width, height)
            if 0.3 * max(width, height) < f < 10 * max(width, height):
                return f
    except Exception:  # malformed EXIF is common and never fatal
        pass
    return None


@dataclass
class DecodedImage:
    """A decoded, EXIF-oriented image before resizing: what every consumer of one file shares."""

    path: Path
    image: Image.Image  # oriented; high-depth data already normalised to mode ``F``
    focal: Optional[float] = None  # focal length prior in original pixels (from EXIF), if any


def _warn_unreadable(path: Path, e: Exception) -> None:
    log.warning("cannot read image %s (%s: %s); it will be written as an outlier", path, type(e).__name__, e)


def decode_image(path: Path | str, draft: Optional[int] = None) -> Optional[DecodedImage]:
    """Decode and orient one file; ``None`` (with a warning) when it cannot be decoded. With ``draft``,
    a JPEG may be decoded at a reduced scale whose sides stay at least ``draft`` pixels (the DCT's own
    1/2-1/8 scaling: several times faster for a small copy, e.g. the upright probe's)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's DecompressionBombWarning etc.
            with Image.open(path) as raw:
                if draft:
                    raw.draft(None, (int(draft), int(draft)))  # a no-op for formats other than JPEG
                raw.load()  # raises on truncated files
                if getattr(raw, "n_frames", 1) > 1:
                    log.warning("image %s is animated (%d frames); using its first frame", path, raw.n_frames)
                img = ImageOps.exif_transpose(raw)
                w, h = img.size
                focal = _exif_focal(raw, w, h)
        if img.mode in _HIGH_DEPTH:
            img = _normalise_high_depth(img)
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...) on bad files
        _warn_unreadable(path, e)
        return None
    return DecodedImage(path, img, focal)


def prepare_image(dec: DecodedImage, conf: Optional[dict] = None) -> Optional[LoadedImage]:
    """Resize and convert a decoded image by ``conf``; ``None`` (with a warning) when it is unusable."""
    conf = {**default_conf, **(conf or {})}
    img, path = dec.image, dec.path
    w, h = img.size
    try:
        scale = 1.0
        resize_max = conf["resize_max"]
        if resize_max and max(w, h) > resize_max:
            s = resize_max / max(w, h)
            new = (max(1, round(w * s)), max(1, round(h * s)))
            img = _resize(img, new)
            scale = new[0] / w  # the realised scale
        arr = _to_float(img, conf["grayscale"])
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...) on bad files
        _warn_unreadable(path, e)
        return None
    if arr.ndim < 2 or min(arr.shape[:2]) < 8:
        log.warning("image %s is too small (%s); it will be written as an outlier", path, arr.shape)
        return None
    return LoadedImage(path.name, arr, (w, h), scale, dec.focal)


def load_image(path: Path | str, conf: Optional[dict] = None) -> Optional[LoadedImage]:
    """Load one image (decode, orient, resize by ``conf``); ``None`` (with a warning) when unusable."""
    dec = decode_image(path)
    return None if dec is None else prepare_image(dec, conf)


def to_tensor(img: LoadedImage):
    """(H, W[, 3]) float array -> torch (1, C, H, W)."""
    import torch

    arr = img.image
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t[None]
