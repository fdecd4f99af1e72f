"""Labels, thresholds and submissions built from camera centres, for the metric's tests."""
from typing import Dict, List, Optional

import numpy as np

from memposer import geometry as geo
from memposer.data.imc import PoseRecord

TH = [0.05, 0.1, 0.2, 0.5, 1.0]


def rec(ds, scene, image, c: Optional[np.ndarray], R: Optional[np.ndarray] = None) -> PoseRecord:
    if c is None or not np.isfinite(c).all():
        return PoseRecord(ds, scene, image)
    R = np.eye(3) if R is None else R
    return PoseRecord(ds, scene, image, R, geo.t_from_center(R, c))


def labels(ds: str, scenes: Dict[str, np.ndarray], rng) -> List[PoseRecord]:
    out = []
    for sc, C in scenes.items():
        Rs = geo.random_rotation(rng, len(C))
        out += [rec(ds, sc, f"{sc}_{i:03d}.png", c, R) for i, (c, R) in enumerate(zip(C, Rs))]
    return out


def cluster(labels, assign: Dict[str, str], centers: Optional[Dict[str, np.ndarray]] = None):
    """Submission rows: image -> cluster name, centres from ``centers`` (default: the truth)."""
    rows = []
    for r in labels:
        if r.image not in assign:
            continue
        c = centers[r.image] if centers and r.image in centers else geo.camera_center(r.R, r.t)
        rows.append(rec(r.dataset, assign[r.image], r.image, c, r.R))
    return rows


def ths(ds, scenes, th=TH):
    return {ds: {sc: list(th) for sc in scenes}}
