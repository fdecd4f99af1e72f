"""Validation metrics of predicted poses: relative-pose errors over frame pairs, and the identity baseline."""
from __future__ import annotations

import logging
from typing import Dict

import numpy as np
import torch

from memposer.geometry import rotation_error, vector_angle
from memposer.models.losses import pair_mask, pairwise_relative

log = logging.getLogger(__name__)

ACC_THRESHOLDS_DEG = (5, 15, 30)


def relative_errors_deg(R: torch.Tensor, t: torch.Tensor, R_gt: torch.Tensor, t_gt: torch.Tensor,
                        mask: torch.Tensor) -> Dict[str, np.ndarray]:
    """Errors (degrees) of the relative poses of every unordered pair i < j of real frames.

    ``rot``: geodesic error of ``R_j R_i^T``; ``tdir``: angle between relative translations
    (pairs whose true cameras coincide are left out of ``tdir``).
    """
    # the loss's pairs (losses.pair_mask), each once; in double precision with exact angles, where the
    # loss needs float32 and gradient-safe ones (losses.pair_errors)
    pairs = pair_mask(mask).triu(1)
    Rp, tp = pairwise_relative(R.double(), t.double())
    Rg, tg = pairwise_relative(R_gt.double(), t_gt.double())
    rot = rotation_error(Rp[pairs], Rg[pairs])
    tgp = tg[pairs]
    has_dir = tgp.norm(dim=-1) > 1e-9 * tg.norm(dim=-1).max().clamp_min(1e-12)
    tdir = vector_angle(tp[pairs][has_dir], tgp[has_dir])
    return {"rot": rot.cpu().numpy(), "tdir": tdir.cpu().numpy()}


def summarize(rot: np.ndarray, tdir: np.ndarray, prefix: str) -> Dict[str, float]:
    """Median / accuracy@{5,15,30} deg of rotation errors, median translation-direction error."""
    out = {}
    if len(rot):
        out[f"{prefix}/rot_err_median"] = float(np.median(rot))
        for th in ACC_THRESHOLDS_DEG:
            out[f"{prefix}/rot_acc{th}"] = float((rot < th).mean())
    if len(tdir):
        out[f"{prefix}/tdir_err_median"] = float(np.median(tdir))
        for th in ACC_THRESHOLDS_DEG:
            out[f"{prefix}/tdir_acc{th}"] = float((tdir < th).mean())
    return out


def identity_predictor(R_gt: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The trivial baseline: every camera at the origin with the identity rotation."""
    B, K = R_gt.shape[:2]
    return {"R": torch.eye(3, dtype=R_gt.dtype, device=R_gt.device).expand(B, K, 3, 3), "t": R_gt.new_zeros(B, K, 3)}
