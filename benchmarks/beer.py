"""The pipeline on real photographs: the ``beer`` video frames with their reference COLMAP poses.

    python benchmarks/beer.py --beer ../shared/data/beer --out bench/beer [--every 2] [pipeline args...]

Lays the frames out as a one-dataset competition split (``train/beer/``, ``train_labels.csv``,
``train_thresholds.csv``), then runs ``benchmarks/pipeline.py`` on it (shortlist vs exhaustive).
The reference poses are defined up to a similarity, so the thresholds are fractions of the scene's
size (median camera distance to the cameras' centroid): 0.5%, 1%, 2%, 5%, 10%, 20%.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

import pipeline as bench  # benchmarks/pipeline.py: a script's own folder is first on sys.path

FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def prepare(beer: Path, data: Path, every: int) -> int:
    """Write the competition layout; returns the number of frames used."""
    from memposer.colmap import read_model_poses
    from memposer.data.imc import PoseRecord, write_poses, write_thresholds
    from memposer.geometry import camera_center

    poses = read_model_poses(beer / "sparse" / "0")
    names = sorted(poses)[::every]
    (data / "train" / "beer").mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(beer / "images" / n, data / "train" / "beer" / n)
    write_poses([PoseRecord("beer", "beer", n, *poses[n]) for n in names], data / "train_labels.csv")
    centres = np.stack([camera_center(*poses[n]) for n in names])
    size = float(np.median(np.linalg.norm(centres - centres.mean(0), axis=1)))
    write_thresholds({"beer": {"beer": [f * size for f in FRACTIONS]}}, data / "train_thresholds.csv")
    return len(names)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beer", type=Path, default=Path("../shared/data/beer"))
    p.add_argument("--out", type=Path, default=Path("bench/beer"))
    p.add_argument("--every", type=int, default=2, help="keep every n-th frame")
    a, rest = p.parse_known_args(argv)
    return bench.main_on_split(a.out, lambda d: f"beer: {prepare(a.beer, d, a.every)} frames in {d}", rest)


if __name__ == "__main__":
    sys.exit(main())
