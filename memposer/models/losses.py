"""Gauge-invariant pose loss over all frame pairs of a scene.

Choice (documented here, as the issue asks): a scene's poses are only defined up to a global
similarity (rotation, translation, scale). Instead of aligning predictions to the truth, the loss
compares **relative poses of all ordered frame pairs** (i, j), which that similarity does not change:

- rotation: geodesic angle between predicted and true ``R_j R_i^T`` (radians);
- translation direction: angle between predicted and true relative translations ``t_ij``
  (the direction of camera i's centre seen from camera j; scale-free);
- distance: ``|d_ij / mean(d) - d*_ij / mean(d*)|`` with ``d_ij = |t_ij| = |c_i - c_j|`` and the mean
  taken over the scene's pairs, so only relative distances matter.

Rotation + direction + normalised distance determine the camera configuration up to a similarity,
so the loss is zero exactly on the right poses. A confidence head learns ``exp(-err_i / T)`` of each
frame's mean rotation error (binary cross-entropy, targets detached).

Optional sequence continuity (off by default, ``w_smooth``): for scenes flagged as sequences, the
second differences of scale-normalised camera centres and of consecutive relative rotations are
penalised. It lives in the loss, never in the network, so unordered input is unaffected.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from memposer.geometry import camera_center, relative_pose

default_loss_conf = {
    "w_rot": 1.0,
    "w_tdir": 1.0,
    "w_dist": 1.0,
    "w_conf": 0.1,
    "w_smooth": 0.0,
    "w_passes": 0.5,            # weight of each earlier refinement pass's pose terms (mean over passes)
    "conf_temperature_deg": 10.0,
}

_EPS = 1e-6


def _safe_acos(cos: torch.Tensor) -> torch.Tensor:
    # acos' is infinite at +-1: keep the gradient finite for near-perfect pairs
    return torch.acos(cos.clamp(-1 + _EPS, 1 - _EPS))


def rotation_angle_safe(R: torch.Tensor) -> torch.Tensor:
    """Rotation angle (radians) with a finite gradient everywhere."""
    return _safe_acos((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2)


def pairwise_relative(R: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B,K,3,3), (B,K,3) -> relative poses (B,K,K,3,3), (B,K,K,3); [i, j] maps camera i to camera j."""
    return relative_pose(R[:, :, None], t[:, :, None], R[:, None], t[:, None])


def pair_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B,K) frame mask -> (B,K,K) mask of ordered pairs of distinct real frames."""
    K = mask.shape[1]
    eye = torch.eye(K, dtype=torch.bool, device=mask.device)
    return mask[:, :, None] & mask[:, None, :] & ~eye


def pair_errors(R: torch.Tensor, t: torch.Tensor, R_gt: torch.Tensor, t_gt: torch.Tensor,
                mask: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-pair errors, shapes (B,K,K) (radians / unitless), zero outside ``pair_mask``.

    Keys: ``rot`` geodesic error of the relative rotation, ``tdir`` angle between relative
    translations, ``dist`` scale-normalised distance error, ``valid`` the pair mask,
    ``tvalid`` pairs whose true cameras do not coincide (direction defined).
    """
    R = R.float()
    t = t.float()
    valid = pair_mask(mask)
    Rp, tp = pairwise_relative(R, t)
    Rg, tg = pairwise_relative(R_gt.float(), t_gt.float())
    rot = rotation_angle_safe(Rp @ Rg.transpose(-1, -2))
    dp, dg = tp.norm(dim=-1), tg.norm(dim=-1)
    n_pairs = valid.sum((1, 2)).clamp_min(1)
    scale_p = ((dp * valid).sum((1, 2)) / n_pairs).clamp_min(_EPS)[:, None, None]
    scale_g = ((dg * valid).sum((1, 2)) / n_pairs).clamp_min(_EPS)[:, None, None]
    dist = (dp / scale_p - dg / scale_g).abs()
    tvalid = valid & (dg / scale_g > 1e-3)
    cos = (tp * tg).sum(-1) / (dp * dg).clamp_min(_EPS)
    tdir = _safe_acos(torch.where(tvalid, cos, torch.ones_like(cos)))
    zero = torch.zeros_like(rot)
    return {"rot": torch.where(valid, rot, zero), "tdir": torch.where(tvalid, tdir, zero),
            "dist": torch.where(valid, dist, zero), "valid": valid, "tvalid": tvalid}


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * m).sum() / m.sum().clamp_min(1)


def smoothness_loss(R: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, is_sequence: torch.Tensor) -> torch.Tensor:
    """Second differences of scale-normalised centres and of consecutive rotation steps.

    Applies to scenes with ``is_sequence`` whose frames are in capture order; (B,) bool.
    """
    c = camera_center(R.float(), t.float())
    valid = pair_mask(mask)
    d = (c[:, :, None] - c[:, None]).norm(dim=-1)
    scale = ((d * valid).sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)).clamp_min(_EPS)
    c = c / scale[:, None, None]
    acc = (c[:, 2:] - 2 * c[:, 1:-1] + c[:, :-2]).norm(dim=-1)
    step = R[:, 1:] @ R[:, :-1].transpose(-1, -2)                     # rotation from frame k to k+1
    dstep = rotation_angle_safe(step[:, 1:] @ step[:, :-1].transpose(-1, -2))
    m = mask[:, 2:] & mask[:, 1:-1] & mask[:, :-2] & is_sequence[:, None]
    return _masked_mean(acc + dstep, m)


def pose_loss(pred: Dict[str, torch.Tensor], R_gt: torch.Tensor, t_gt: torch.Tensor, mask: torch.Tensor,
              conf: Optional[Dict[str, float]] = None, is_sequence: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Total loss and its terms. pred from MemPoser.forward; R_gt (B,K,3,3), t_gt (B,K,3), mask (B,K)."""
    conf = {**default_loss_conf, **(conf or {})}
    e, terms = pose_terms(pred, R_gt, t_gt, mask)
    total = _weighted(terms, conf)
    if conf["w_conf"] > 0 and "conf_logit" in pred:
        per_frame = (e["rot"].sum(2) / e["valid"].sum(2).clamp_min(1)).detach()
        target = torch.exp(-torch.rad2deg(per_frame) / conf["conf_temperature_deg"])
        bce = F.binary_cross_entropy_with_logits(pred["conf_logit"].float(), target, reduction="none")
        terms["conf"] = _masked_mean(bce, mask & (e["valid"].sum(2) > 0))
        total = total + conf["w_conf"] * terms["conf"]
    if conf["w_smooth"] > 0 and is_sequence is not None and bool(is_sequence.any()):
        terms["smooth"] = smoothness_loss(pred["R"], pred["t"], mask, is_sequence)
        total = total + conf["w_smooth"] * terms["smooth"]
    if pred.get("passes") and conf["w_passes"] > 0:
        earlier = [_weighted(pose_terms(p, R_gt, t_gt, mask)[1], conf) for p in pred["passes"]]
        terms["passes"] = sum(earlier) / len(earlier)
        total = total + conf["w_passes"] * terms["passes"]
    terms["loss"] = total
    return terms


def pose_terms(pred: Dict[str, torch.Tensor], R_gt: torch.Tensor, t_gt: torch.Tensor,
               mask: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(pair_errors, {"rot", "tdir", "dist"})``: one prediction's per-pair errors and their means."""
    e = pair_errors(pred["R"], pred["t"], R_gt, t_gt, mask)
    return e, {"rot": _masked_mean(e["rot"], e["valid"]), "tdir": _masked_mean(e["tdir"], e["tvalid"]),
               "dist": _masked_mean(e["dist"], e["valid"])}


def _weighted(terms: Dict[str, torch.Tensor], conf: Dict[str, float]) -> torch.Tensor:
    return conf["w_rot"] * terms["rot"] + conf["w_tdir"] * terms["tdir"] + conf["w_dist"] * terms["dist"]
