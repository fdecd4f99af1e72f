"""Pose-conditioned refinement: the decoder looks again at the tracks through its current poses.

After a decoder pass has predicted every camera, each observation becomes a **ray** in the scene:
its bearing rotated into the world by its frame's rotation, from its frame's centre. Each track is
triangulated from its rays (least squares), and each observation gets its residual (where the
triangulated point lands in its image against where it was observed). A shared refiner reads these
and predicts a small pose update per frame, so the network does what bundle adjustment does: it
checks whether the rays of each track meet, and propagates the answer along chains of short tracks.

Everything is computed in a **canonical gauge** per scene (mean rotation the identity, centres
zero-mean, unit RMS): a function of the poses that does not depend on the order of the frames, so
the model stays equivariant in frames and tracks. Poses are detached between iterations (only the
features carry gradients), as RAFT does, so each update learns to improve whatever it is given.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from memposer.models.encoder import unit_bearing

NUM_RAY_FEATURES = 16
_EPS = 1e-6


def project_so3(M: torch.Tensor) -> torch.Tensor:
    """Closest rotation to each (..., 3, 3) matrix (chordal mean when M is a sum of rotations)."""
    U, _, Vh = torch.linalg.svd(M)
    d = torch.det(U @ Vh)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    return U @ D @ Vh


def canonical_gauge(R: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera R (B,N,3,3) and centres c (B,N,3) in the scene's canonical gauge.

    The world is rotated so the chordal mean of the (masked) rotations is the identity, moved so the
    centres have zero mean and scaled so their RMS distance to it is 1.
    """
    m = mask.to(R.dtype)
    M = project_so3((R * m[..., None, None]).sum(1) + _EPS * torch.eye(3, device=R.device))  # (B,3,3)
    R = R @ M[:, None].transpose(-1, -2)
    n = m.sum(1).clamp_min(1)[:, None]
    mean = (c * m[..., None]).sum(1) / n
    c = c - mean[:, None]
    rms = ((c.square().sum(-1) * m).sum(1, keepdim=True) / n).sqrt().clamp_min(_EPS)
    c = (M[:, None] @ (c / rms[..., None])[..., None])[..., 0]
    return R, c


def triangulate(rays: torch.Tensor, centers: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Least-squares point of each track's rays: rays (B,N,P,3) unit, centres (B,N,3), vis (B,N,P) -> (B,P,3).

    Solves sum_i (I - d d^T) X = sum_i (I - d d^T) c_i; a small ridge keeps tracks with fewer than two
    rays, or parallel rays, finite (pulled towards the scene's centre, where their residual says so).
    """
    w = vis.to(rays.dtype)[..., None, None]
    proj = torch.eye(3, device=rays.device) - rays[..., :, None] * rays[..., None, :]    # (B,N,P,3,3)
    A = (w * proj).sum(1) + 1e-5 * torch.eye(3, device=rays.device)
    b = (w * proj @ centers[:, :, None, :, None]).sum(1)
    return torch.linalg.solve(A, b)[..., 0]


def ray_features(obs: torch.Tensor, vis: torch.Tensor, R: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(B,N,P,NUM_RAY_FEATURES) geometric features of each observation under canonical poses R, c.

    Per observation: its world ray (direction and Plücker moment), its frame's centre, the residual
    of the track's triangulated point in its image at two scales, whether that point is in front,
    its log depth, and the log number of rays of the track. Zero where not observed.
    """
    obs = obs.float()
    d = (R.transpose(-1, -2)[:, :, None] @ unit_bearing(obs)[..., None])[..., 0]                # (B,N,P,3)
    cen = c[:, :, None].expand_as(d)
    X = triangulate(d, c, vis)                                                          # (B,P,3)
    Xc = (R[:, :, None] @ (X[:, None] - cen)[..., None])[..., 0]
    z = Xc[..., 2]
    front = z > 1e-3
    err = torch.where(front[..., None], Xc[..., :2] / z.clamp_min(1e-3)[..., None] - obs, torch.zeros_like(obs))
    length = vis.sum(1, keepdim=True).expand_as(vis).to(obs.dtype)
    f = torch.cat([d, torch.cross(cen, d, dim=-1), cen, torch.tanh(err * 30), torch.tanh(err * 3),
                   front[..., None].to(obs.dtype), torch.log(z.abs().clamp_min(1e-3))[..., None] / 3,
                   torch.log(length.clamp_min(1))[..., None] / 3], -1)
    return f * vis[..., None].to(f.dtype)


class RayEncoder(nn.Module):
    """Ray features -> observation tokens (B,N,P,C), and a frame's pose -> a frame token update."""

    def __init__(self, dim: int):
        super().__init__()
        self.obs = nn.Sequential(nn.Linear(NUM_RAY_FEATURES, dim), nn.GELU(), nn.Linear(dim, dim))
        self.frame = nn.Sequential(nn.Linear(12, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, obs, vis, R, c) -> Tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(obs.device.type, enabled=False):
            f = ray_features(obs, vis, R.float(), c.float())
            pose = torch.cat([R.float().flatten(-2), c.float()], -1)
        x = self.obs(f) * vis[..., None].to(f.dtype)
        return x, self.frame(pose)
