"""A tiny IMC2025-layout folder for tests: random-texture images with random poses (not learnable)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from memposer.data.imc import PoseRecord, write_poses, write_thresholds
from memposer.geometry import random_rotation


def write_tiny_imc(root: Path, n_datasets: int = 2, scenes_per_dataset: int = 2, frames: int = 6,
                   size: int = 40, outliers: int = 1, seed: int = 0) -> Path:
    """Writes train_labels.csv, train_thresholds.csv and train/<dataset>/*.png under ``root``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    records, thresholds = [], {}
    for d in range(n_datasets):
        ds = f"ds{d}"
        (root / "train" / ds).mkdir(parents=True, exist_ok=True)
        for s in range(scenes_per_dataset):
            sc = f"scene{s}"
            thresholds.setdefault(ds, {})[sc] = [0.05, 0.1, 0.2, 0.5, 1.0]
            for f in range(frames):
                name = f"{sc}_{f:03d}.png"
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "train" / ds / name)
                records.append(PoseRecord(ds, sc, name, random_rotation(rng), rng.normal(size=3)))
        for o in range(outliers):
            name = f"outlier_{o}.png"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "train" / ds / name)
            records.append(PoseRecord(ds, "outliers", name, None, None))
    write_poses(records, root / "train_labels.csv")
    write_thresholds(thresholds, root / "train_thresholds.csv")
    return root
