"""Test-time roll augmentation: run MemPoser on the scene turned by whole-scene rolls, keep the best.

A scene shot with the camera on its side (middlebury's turntables: every view rolled ~90 degrees
about its axis) is far from the upright scenes the network mostly saw in training
(docs/results.md, "Temple: its layout"). Rolling every camera by one angle about its optical axis
rotates each image's normalised keypoints by that angle and leaves the geometry intact, so the
network can be asked the same question in ``rolls`` orientations; the answers are turned back and
the one whose relative rotations agree best with the pairs' two-view rotations (essential matrices
from the same tracks, :func:`memposer.baselines.pair_rotations`) is kept. Which one to keep needs no
reference: it is a property of the tracks. (The median Sampson distance of the tracks under the
predicted poses, :func:`epipolar_score`, is the fallback where no pair has an essential matrix; on
temple it preferred a wrong, upside-down answer: a small object's matches fit many epipoles.)

    out = predict_rolled(model, obs, vis, exif=flags, rolls=4)   # + "roll_deg", "scores"
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from memposer.geometry import roll_matrix


def roll_keypoints(obs: np.ndarray, vis: np.ndarray, Rz: np.ndarray) -> np.ndarray:
    """Normalised keypoints (N,P,2) as seen by cameras rolled by ``Rz`` (N,3,3); unobserved stay 0."""
    return np.einsum("nij,npj->npi", Rz[:, :2, :2], obs) * vis[..., None]


def epipolar_score(R: np.ndarray, t: np.ndarray, obs: np.ndarray, vis: np.ndarray) -> float:
    """Median Sampson distance (normalised image units) of all pairs' shared observations under the
    relative poses of ``R`` (N,3,3), ``t`` (N,3); inf without any shared observation."""
    n = len(R)
    i, j = np.triu_indices(n, 1)
    Rij = R[j] @ np.transpose(R[i], (0, 2, 1))                   # camera i -> camera j
    tij = t[j] - np.einsum("kab,kb->ka", Rij, t[i])
    tx = np.zeros((len(i), 3, 3))
    tx[:, 0, 1], tx[:, 0, 2], tx[:, 1, 2] = -tij[:, 2], tij[:, 1], -tij[:, 0]
    tx -= np.transpose(tx, (0, 2, 1))
    E = tx @ Rij                                                  # (K,3,3)
    x = np.concatenate([obs, np.ones(obs.shape[:2] + (1,), obs.dtype)], -1).astype(np.float64)
    both = vis[i] & vis[j]                                        # (K,P)
    Ex = np.einsum("kab,kpb->kpa", E, x[i])                       # epipolar lines in j
    Etx = np.einsum("kba,kpb->kpa", E, x[j])                      # epipolar lines in i
    num = np.einsum("kpa,kpa->kp", x[j], Ex) ** 2
    den = Ex[..., 0] ** 2 + Ex[..., 1] ** 2 + Etx[..., 0] ** 2 + Etx[..., 1] ** 2
    # a pair with no baseline explains nothing (E = 0 would score 0/0): infinitely bad
    d = np.where(den > 1e-18, np.sqrt(num / np.maximum(den, 1e-18)), np.inf)[both]
    return float(np.median(d)) if d.size else float("inf")


def rotation_score(R: np.ndarray, pairs) -> float:
    """Median angle (degrees) between the relative rotations of ``R`` (N,3,3) and the two-view ones
    ``pairs`` [(i, j, R_ij, inliers)] (R_ij maps camera i to j)."""
    from memposer.geometry import rotation_error  # noqa: PLC0415
    return float(np.median([rotation_error(R[j] @ R[i].T, Rij) for i, j, Rij, _ in pairs]))


def predict_rolled(model, obs, vis, exif=None, rolls: int = 4, margin: float = 0.8,
                   turns=None) -> Dict[str, torch.Tensor]:
    """``model.predict`` for ``rolls`` whole-scene rolls (0, 360/rolls, ... degrees), each turned back
    into the input's camera frames; the one with the lowest :func:`rotation_score` against the
    two-view rotations (:func:`epipolar_score` where fewer than 3 pairs have one) is returned, with
    ``roll_deg`` (the roll it came from) and ``scores`` (one per roll). The unrolled answer is kept
    unless another scores below ``margin`` times its score: most scenes are shot upright, and on
    those a lower score elsewhere is mostly chance. ``rolls=1`` is plain predict.

    ``turns`` (N,) int: each image's quarter turns counter-clockwise (``numpy.rot90``'s ``k``) that
    the upright stage found (memposer.pipeline.upright); its keypoints are turned so before the rolls,
    so a scene whose views are turned against each other reaches the network as one orientation."""
    obs_t = torch.as_tensor(obs)
    vis_t = torch.as_tensor(vis).bool()
    obs_np, vis_np = obs_t.double().numpy(), vis_t.numpy()
    pairs = []
    if rolls > 1:
        from memposer.baselines import pair_rotations  # noqa: PLC0415
        pairs = pair_rotations(obs_np, vis_np)
    base = np.zeros(len(obs_np)) if turns is None else -np.pi / 2 * np.asarray(turns, float)  # a turn: (x, y) -> (y, -x)
    best: Optional[Dict[str, torch.Tensor]] = None
    scores = []
    for k in range(rolls):
        Rz = roll_matrix(base + 2 * np.pi * k / rolls)                             # (N,3,3)
        rolled = torch.from_numpy(roll_keypoints(obs_np, vis_np, Rz))
        out = model.predict(rolled.to(obs_t.dtype), vis_t, exif=exif)
        # the network's cameras are Rz x ours: R = Rz^T R', t = Rz^T t'
        R = np.transpose(Rz, (0, 2, 1)) @ out["R"].double().cpu().numpy()
        t = np.einsum("nji,nj->ni", Rz, out["t"].double().cpu().numpy())
        score = rotation_score(R, pairs) if len(pairs) >= 3 else epipolar_score(R, t, obs_np, vis_np)
        scores.append(score / (1.0 if k == 0 else margin))
        if best is None or scores[-1] < min(scores[:-1]):
            best = {"R": torch.from_numpy(R).float(), "t": torch.from_numpy(t).float(), "conf": out["conf"],
                    "roll_deg": torch.tensor(360.0 * k / rolls)}
    best["scores"] = torch.tensor(scores) * torch.tensor([1.0] + [margin] * (rolls - 1))
    return best


class RolledModel:
    """A MemPoser whose ``predict`` is :func:`predict_rolled` (refinement from given ``init`` poses
    stays plain: those poses fix the orientation already). ``turns``: see :func:`predict_rolled`."""

    def __init__(self, model, rolls: int = 4, margin: float = 0.8, turns=None):
        model = model.model if isinstance(model, RolledModel) else model
        self.model, self.rolls, self.margin, self.turns, self.conf = model, rolls, margin, turns, model.conf

    def predict(self, obs, vis, desc=None, init=None, exif=None) -> Dict[str, torch.Tensor]:
        if init is not None or desc is not None or (self.rolls <= 1 and self.turns is None):
            return self.model.predict(obs, vis, desc=desc, init=init, exif=exif)
        return predict_rolled(self.model, obs, vis, exif=exif, rolls=self.rolls, margin=self.margin,
                              turns=self.turns)
