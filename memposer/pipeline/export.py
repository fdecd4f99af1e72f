"""Outputs besides submission.csv: each cluster as a COLMAP model, the cluster -> images map.

Layout under the export folder (``infer.py --export DIR``)::

    <dataset>/clusters.csv                                   image,cluster for every image (outliers too)
    <dataset>/pairs.txt                                      the matched pairs, ``name0 name1`` a line (hloc's format)
    <dataset>/<cluster>/cameras.bin images.bin points3D.bin  (+ rigs.bin frames.bin) one COLMAP model

The models hold exactly the submission's images and poses (image names are the dataset's file
names), so pycolmap, the COLMAP GUI and hloc read them as they are.
"""
from __future__ import annotations

import csv
import logging
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from memposer import colmap
from memposer.data.imc import OUTLIER_SCENE

log = logging.getLogger(__name__)

CLUSTERS_CSV = "clusters.csv"
PAIRS_TXT = "pairs.txt"
_CLUSTER_DIR = re.compile(r"cluster\d+")


def export_dataset(export_dir: Path | str, dataset: str, names: Sequence[str], clusters: Dict[str, List[str]],
                   model_dirs: Dict[str, Optional[str]], pairs: Sequence[Sequence[str]] = ()) -> Path:
    """Write ``export_dir/<dataset>/``: ``clusters.csv``, ``pairs.txt`` and one model folder per cluster that has one.

    ``clusters``: cluster -> images (as in the submission); ``model_dirs``: cluster -> the COLMAP
    model the reconstruction stage wrote (None: none, e.g. writing it failed). A previous export of
    the same dataset loses its ``cluster<k>`` folders first, so no stale model survives a re-run.
    """
    out = Path(export_dir) / dataset
    if (out / CLUSTERS_CSV).is_file():
        for old in out.iterdir():
            if old.is_dir() and _CLUSTER_DIR.fullmatch(old.name):
                shutil.rmtree(old)
    out.mkdir(parents=True, exist_ok=True)
    where = {n: c for c, members in clusters.items() for n in members}
    for c in clusters:
        src = model_dirs.get(c)
        if src:
            shutil.copytree(src, out / c, dirs_exist_ok=True)
        else:
            log.warning("export: %s / %s has no COLMAP model; its images are only in %s", dataset, c, CLUSTERS_CSV)
    with open(out / CLUSTERS_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "cluster"])
        w.writerows([n, where.get(n, OUTLIER_SCENE)] for n in names)
    (out / PAIRS_TXT).write_text("".join(f"{a} {b}\n" for a, b in pairs))
    return out


def sample_points(model_dir: Optional[str], max_points: int) -> List[List[float]]:
    """At most ``max_points`` 3D points of a model (evenly spaced in id order), for the report's 3D view."""
    if not model_dir:
        return []
    xyz = colmap.model_points(model_dir)
    if len(xyz) > max_points:
        xyz = xyz[np.linspace(0, len(xyz) - 1, max_points).round().astype(int)]
    return np.round(xyz, 5).tolist()
