"""Pose predictors for the reconstruction stage (``--poses memposer|seeded``).

A predictor maps one cluster (image names + the COLMAP database holding their verified matches)
to world-to-camera ``(R, t, conf)`` in any gauge. ``load_predictor`` wraps a MemPoser checkpoint;
``baseline_predictor`` gives the uninformative seeds the benchmarks compare it with (identity,
random) and, given reference poses, perturbed true poses.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from memposer.colmap import Pose
from memposer.pipeline.features import pick_device
from memposer.pipeline.reconstruction import Predictor
from memposer.pipeline.tracks import cluster_tracks

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "memposer-tracks.safetensors"


def features_file(folder: Path) -> Optional[Path]:
    """The features cache the pipeline wrote last in a dataset's work folder (None if there is none)."""
    found = sorted(Path(folder).glob("features-*.h5"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def load_predictor(checkpoint: str | Path, device: str = "auto", tracks: Optional[dict] = None,
                   rolls: int = 1, turns: bool = False) -> Predictor:
    """MemPoser on each cluster's tracks (:func:`memposer.pipeline.tracks.cluster_tracks`).

    ``rolls`` > 1 or ``turns``: :func:`memposer.models.tta.predict_rolled`, the turns read from the
    features file beside the cluster's database (the upright stage's; all 0 when it was off)."""
    import torch  # noqa: PLC0415

    from memposer.baselines import identity_poses  # noqa: PLC0415
    from memposer.models.checkpoint import load_checkpoint  # noqa: PLC0415

    model = load_checkpoint(checkpoint, map_location=pick_device(device))
    track_conf = {"max_tracks": model.conf["max_tracks"], **(tracks or {})}
    log.info("MemPoser predictor from %s (%d tracks per cluster at most)", checkpoint, track_conf["max_tracks"])

    def predict(names: List[str], database_path: Path):
        tr = cluster_tracks(database_path, names, track_conf)
        if tr.vis.shape[1] == 0:  # no verified match in the cluster: no pose for anyone
            return (*identity_poses(len(names)), np.zeros(len(names)))
        obs, vis, exif = torch.from_numpy(tr.obs), torch.from_numpy(tr.vis), torch.from_numpy(tr.exif)
        if rolls > 1 or turns:
            from memposer.models.tta import predict_rolled  # noqa: PLC0415
            from memposer.pipeline.upright import read_turns  # noqa: PLC0415
            feats = features_file(Path(database_path).parent) if turns else None
            k = read_turns(feats, names) if feats is not None else None
            out = predict_rolled(model, obs, vis, exif=exif, rolls=max(rolls, 1), turns=k)
            log.info("MemPoser under %d rolls%s: kept %.0f deg", rolls,
                     f", quarter turns {np.bincount(k % 4, minlength=4).tolist()}" if k is not None else "",
                     float(out["roll_deg"]))
        else:
            out = model.predict(obs, vis, exif=exif)
        return tuple(out[k].double().cpu().numpy() for k in ("R", "t", "conf"))

    return predict


def baseline_predictor(kind: str, seed: int = 0, reference: Optional[Dict[str, Pose]] = None,
                       noise_deg: float = 5.0, noise_centre: float = 0.05) -> Predictor:
    """``identity`` | ``random`` | ``perturbed`` (``reference`` poses with ``noise_deg`` rotation noise and
    centre noise of ``noise_centre`` times the cluster's camera spread)."""
    from scipy.spatial.transform import Rotation  # noqa: PLC0415

    from memposer.baselines import identity_poses, random_poses  # noqa: PLC0415
    from memposer.geometry import camera_center, random_rotation, t_from_center  # noqa: PLC0415

    if kind not in ("identity", "random", "perturbed"):
        raise ValueError(f"unknown baseline seed {kind!r} (identity|random|perturbed)")
    if kind == "perturbed" and not reference:
        raise ValueError("perturbed seeds need reference poses")

    def predict(names: List[str], database_path: Path):
        n = len(names)
        if kind == "identity":
            return (*identity_poses(n), np.ones(n))
        if kind == "random":
            return (*random_poses(n, seed), np.ones(n))
        rng = np.random.default_rng(seed)
        has = np.array([m in reference for m in names])
        R = np.stack([reference[m][0] if m in reference else np.eye(3) for m in names])
        c = np.stack([camera_center(*reference[m]) if m in reference else np.zeros(3) for m in names])
        spread = float(np.median(np.linalg.norm(c[has] - c[has].mean(0), axis=1))) if has.any() else 1.0
        axis = random_rotation(rng, n).reshape(n, 3, 3)[:, 0]  # uniform unit vectors
        ang = np.radians(rng.normal(0, noise_deg, n))
        R = Rotation.from_rotvec(axis * ang[:, None]).as_matrix() @ R
        c = c + rng.normal(0, noise_centre * spread, c.shape)
        return R, t_from_center(R, c), has.astype(float)

    return predict
