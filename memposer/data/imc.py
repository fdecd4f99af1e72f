"""IMC2025 files: labels, thresholds, sample submission, test-folder scanning, submission writing.

A pose row is a :class:`PoseRecord`. Rotations are 3x3 world-to-camera matrices, translations
3-vectors (see :mod:`memposer.geometry`); ``None`` means "no pose" and is written as ``nan``.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".gif")
SUBMISSION_COLUMNS = ("image_id", "dataset", "scene", "image", "rotation_matrix", "translation_vector")
OUTLIER_SCENE = "outliers"


@dataclass
class PoseRecord:
    """One row of a labels or submission file."""

    dataset: str
    scene: str
    image: str
    R: Optional[np.ndarray] = None  # (3, 3) world-to-camera, None when unknown
    t: Optional[np.ndarray] = None  # (3,)
    image_id: Optional[str] = None

    @property
    def has_pose(self) -> bool:
        return self.R is not None and self.t is not None and bool(np.isfinite(self.R).all() and np.isfinite(self.t).all())


def _parse_numbers(text: str, n: int) -> Optional[np.ndarray]:
    text = (text or "").strip()
    if not text:
        return None
    vals = np.array([float(v) for v in text.split(";")], dtype=np.float64)
    if vals.size != n:
        raise ValueError(f"expected {n} numbers, got {vals.size}: {text!r}")
    return None if not np.isfinite(vals).all() else vals


def _format_numbers(x: Optional[np.ndarray], n: int) -> str:
    if x is None or not np.isfinite(np.asarray(x, dtype=np.float64)).all():
        return ";".join(["nan"] * n)
    return ";".join(repr(float(v)) for v in np.asarray(x, dtype=np.float64).reshape(-1))


def read_poses(path: Path | str) -> List[PoseRecord]:
    """Read ``train_labels.csv``, a submission or ``sample_submission.csv`` (any column order)."""
    records = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            R = _parse_numbers(row.get("rotation_matrix", ""), 9)
            t = _parse_numbers(row.get("translation_vector", ""), 3)
            records.append(PoseRecord(
                dataset=row["dataset"], scene=row.get("scene", OUTLIER_SCENE) or OUTLIER_SCENE,
                image=row["image"], R=None if R is None else R.reshape(3, 3), t=t,
                image_id=row.get("image_id"),
            ))
    return records


read_labels = read_poses
read_submission = read_poses


def read_thresholds(path: Path | str) -> Dict[str, Dict[str, List[float]]]:
    """``train_thresholds.csv`` -> ``{dataset: {scene: [thresholds...]}}``."""
    out: Dict[str, Dict[str, List[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ths = [float(v) for v in row["thresholds"].split(";")]
            out.setdefault(row["dataset"], {})[row["scene"]] = ths
    return out


def write_thresholds(thresholds: Dict[str, Dict[str, List[float]]], path: Path | str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "scene", "thresholds"])
        for ds, scenes in thresholds.items():
            for scene, ths in scenes.items():
                w.writerow([ds, scene, ";".join(repr(float(v)) for v in ths)])


def write_poses(records: Iterable[PoseRecord], path: Path | str) -> Path:
    """Write rows in the exact competition format; ``image_id`` defaults to ``<dataset>_<image>``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(SUBMISSION_COLUMNS)
        for r in records:
            w.writerow([
                r.image_id or f"{r.dataset}_{r.image}", r.dataset, r.scene, r.image,
                _format_numbers(r.R, 9), _format_numbers(r.t, 3),
            ])
    tmp.replace(path)  # atomic: a crash never leaves a half-written submission
    return path


write_submission = write_poses


def is_image_file(path: Path) -> bool:
    """An image by its extension; a broken symlink counts too, so that it gets its (nan) row."""
    return ((path.is_file() or path.is_symlink()) and path.suffix.lower() in IMAGE_EXTENSIONS
            and not path.name.startswith("."))


def scan_dataset_folder(root: Path | str) -> Dict[str, List[str]]:
    """Scan a competition split (``test/`` or ``train/``): ``{dataset: sorted image names}``.

    Needs no ``sample_submission.csv``. Datasets with no images are kept (empty list) so that the
    caller can report them; files with other extensions are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    out: Dict[str, List[str]] = {}
    for ds in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        names = sorted(p.name for p in ds.iterdir() if is_image_file(p))
        skipped = [p.name for p in ds.iterdir() if p.is_file() and not is_image_file(p)]
        if skipped:
            log.info("dataset %s: ignoring %d non-image files (e.g. %s)", ds.name, len(skipped), skipped[0])
        if not names:
            log.warning("dataset %s has no images", ds.name)
        out[ds.name] = names
    return out


def nan_records(dataset: str, images: Iterable[str]) -> List[PoseRecord]:
    """Rows for images without a pose: scene ``outliers``, ``nan`` pose."""
    return [PoseRecord(dataset, OUTLIER_SCENE, im) for im in images]


def complete_submission(records: List[PoseRecord], expected: Dict[str, List[str]]) -> List[PoseRecord]:
    """Ensure every expected image appears exactly once (missing ones as ``nan`` outliers)."""
    seen = {}
    for r in records:
        key = (r.dataset, r.image)
        if key in seen:
            log.warning("duplicate row for %s/%s dropped", *key)
            continue
        seen[key] = r
    out = []
    for ds, images in expected.items():
        missing = [im for im in images if (ds, im) not in seen]
        if missing:
            log.warning("dataset %s: %d images had no row; written as nan outliers", ds, len(missing))
        for im in images:
            out.append(seen.get((ds, im)) or PoseRecord(ds, OUTLIER_SCENE, im))
    extra = set(seen) - {(ds, im) for ds, ims in expected.items() for im in ims}
    if extra:
        log.warning("%d rows name images that are not in the data folder; dropped", len(extra))
    return out

