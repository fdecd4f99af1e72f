"""Images the mapper left out get the network's pose, expressed in the reconstructed model's gauge.

The network predicts every image of a cluster in its own similarity gauge. Over the images both
the model and the network placed, a similarity (camera centres, least squares) maps the network's
gauge onto the model's; an image the model lacks gets its predicted pose through that similarity,
but only where the two agree on the shared images (rotations after alignment within
``max_rotation_deg``, centres within ``max_centre_error`` of the model's camera spread) and the
network's confidence is at least ``min_conf``. Off by default (``reconstruction.fill_unregistered``).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import numpy as np

from memposer.colmap import Pose
from memposer.geometry import camera_center, rotation_error, t_from_center, umeyama

log = logging.getLogger(__name__)

default_conf = {
    "min_shared": 4,
    "max_rotation_deg": 10.0,
    "max_centre_error": 0.1,  # median aligned-centre error / median camera distance to their centroid
    "min_conf": 0.3,
}


def align_prediction(model: Dict[str, Pose], pred: Dict[str, Pose]) -> Tuple[tuple, Dict[str, float]]:
    """Similarity ``(s, Rs, ts)`` taking predicted centres onto the model's, and the agreement numbers."""
    shared = sorted(set(model) & set(pred))
    cp = np.stack([camera_center(*pred[n]) for n in shared])
    cm = np.stack([camera_center(*model[n]) for n in shared])
    s, Rs, ts = umeyama(cp, cm)
    spread = float(np.median(np.linalg.norm(cm - cm.mean(0), axis=1))) or 1.0
    centre_err = float(np.median(np.linalg.norm(s * cp @ Rs.T + ts - cm, axis=1))) / spread
    rot_err = float(np.median([rotation_error(pred[n][0] @ Rs.T, model[n][0]) for n in shared]))
    return (s, Rs, ts), {"shared": len(shared), "centre_error": centre_err, "rotation_deg": rot_err}


def fill_unregistered(models: List[Dict[str, Pose]], pred: Dict[str, Pose], conf: Dict[str, float],
                      options: Dict | None = None) -> Tuple[List[Dict[str, Pose]], Dict[str, float]]:
    """``models`` (largest first) with the images no model holds added to the largest, where allowed."""
    o = {**default_conf, **(options or {})}
    if not models:
        return models, {"filled": 0}
    placed = set().union(*map(set, models))
    missing = [n for n in pred if n not in placed and conf.get(n, 0.0) >= o["min_conf"]]
    if not missing or len(set(models[0]) & set(pred)) < o["min_shared"]:
        return models, {"filled": 0}
    (s, Rs, ts), agree = align_prediction(models[0], pred)
    if agree["rotation_deg"] > o["max_rotation_deg"] or agree["centre_error"] > o["max_centre_error"]:
        log.debug("not filling %d images: network and model disagree (%s)", len(missing), agree)
        return models, {"filled": 0, **agree}
    first = dict(models[0])
    for n in missing:
        R = pred[n][0] @ Rs.T
        first[n] = (R, t_from_center(R, s * Rs @ camera_center(*pred[n]) + ts))
    return [first] + models[1:], {"filled": len(missing), **agree}
