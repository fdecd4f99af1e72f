"""Stage 8: camera poses per cluster, by one of three paths (``poses:``).

- ``colmap``: pycolmap's incremental (or global) mapper on the cluster's images;
- ``memposer``: the network's poses alone (no geometry);
- ``seeded``: the network's poses seed a COLMAP reconstruction refined by bundle adjustment
  (``memposer.pipeline.seeding``); the mapper runs too and the better model by
  ``seeding.better_of`` is kept, so seeding never makes a cluster worse by that criterion.

Every model found becomes its own cluster (COLMAP splitting a cluster is how look-alike scenes
that clustering merged get separated again). Poses are world-to-camera ``(R, t)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from memposer import colmap
from memposer.colmap import Pose
from memposer.pipeline import seeding

log = logging.getLogger(__name__)

# A pose predictor: image paths of one cluster -> (R (N,3,3), t (N,3), confidence (N,)).
Predictor = Callable[[List[Path]], Tuple[np.ndarray, np.ndarray, np.ndarray]]

default_conf = {
    "poses": "colmap",  # colmap | memposer | seeded
    "mapper": "incremental",  # incremental | global
    "num_threads": -1,  # 1 makes COLMAP's output reproducible
    "seed": 0,
    "min_num_matches": 15,
    "min_model_size": 3,
    "max_num_models": 50,
    "max_runtime_seconds": 0,  # per cluster; 0 = no limit
    "structure_less_fallback": False,  # pycolmap 4's slow structure-less registration
    "seeding": {},  # memposer.pipeline.seeding.default_conf
}


@dataclass
class ClusterResult:
    models: List[Dict[str, Pose]]  # one {name: pose} per reconstructed model, largest first
    path: str  # which path produced them: colmap | memposer | seeded
    stats: Dict[str, float] = field(default_factory=dict)


def _seeded(database_path: Path, names: Sequence[str], pred: Dict[str, Pose], mapped, conf: dict) -> ClusterResult:
    seeded_names = [n for n in names if n in pred]
    R = np.stack([pred[n][0] for n in seeded_names])
    t = np.stack([pred[n][1] for n in seeded_names])
    res = seeding.seed_reconstruction(database_path, seeded_names, R, t,
                                      {**conf["seeding"], "seed": conf["seed"]}, all_names=names)
    incremental = mapped[0] if mapped else None
    choice = seeding.better_of(res.reconstruction, incremental)
    stats = {f"seeded_{k}": float(v) for k, v in seeding.reconstruction_quality(res.reconstruction).items()}
    stats.update({f"colmap_{k}": float(v) for k, v in seeding.reconstruction_quality(incremental).items()})
    if choice == "seeded":
        # The seeded model replaces the mapper's largest; the mapper's other models stay clusters.
        models = [colmap.poses_of(res.reconstruction)] + [colmap.poses_of(r) for r in mapped[1:]]
        return ClusterResult(disjoint(models), "seeded", stats)
    return ClusterResult(disjoint([colmap.poses_of(r) for r in mapped]), "colmap", stats)


def disjoint(models: List[Dict[str, Pose]], min_size: int = 1) -> List[Dict[str, Pose]]:
    """Each image in one model only: COLMAP's models may overlap; an image stays in the first
    (largest) model that has it, and models left smaller than ``min_size`` are dropped."""
    taken: set = set()
    out = []
    for m in models:
        m = {k: v for k, v in m.items() if k not in taken}
        if len(m) >= min_size:
            out.append(m)
            taken |= set(m)
    return out


def reconstruct_cluster(names: Sequence[str], database_path: Path | str, image_dir: Path | str,
                        out_dir: Path | str, conf: Optional[dict] = None,
                        predictor: Optional[Predictor] = None) -> ClusterResult:
    """Poses for one cluster's images by the configured path."""
    conf = {**default_conf, **(conf or {})}
    database_path, image_dir, out_dir = Path(database_path), Path(image_dir), Path(out_dir)
    mode = conf["poses"]
    if mode not in ("colmap", "memposer", "seeded"):
        raise ValueError(f"unknown poses path {mode!r} (colmap|memposer|seeded)")
    if mode != "colmap" and predictor is None:
        raise ValueError(f"poses: {mode} needs a MemPoser checkpoint (--checkpoint)")
    pred: Dict[str, Pose] = {}
    if predictor is not None and mode != "colmap":
        R, t, _ = predictor([image_dir / n for n in names])
        pred = {n: (R[i], t[i]) for i, n in enumerate(names)}
    if mode == "memposer":
        return ClusterResult([pred], "memposer", {"registered": float(len(pred))})
    mapped = colmap.run_mapper(database_path, image_dir, out_dir, names, conf)
    if mode == "seeded" and len(pred) >= 3:
        return _seeded(database_path, names, pred, mapped, conf)
    models = disjoint([colmap.poses_of(r) for r in mapped], conf["min_model_size"])
    return ClusterResult(models, "colmap", {"registered": float(sum(map(len, models)))})


main = reconstruct_cluster
