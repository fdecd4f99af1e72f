"""Observation encoder: a frame's keypoints of a track (normalised image points) -> feature tokens.

Input points are ``((u - cx) / f, (v - cy) / f)`` with the focal length the pipeline assumes for
that image (EXIF or COLMAP's prior), so the encoder sees the same numbers in training and in the
pipeline. Optional per-observation descriptors (e.g. ALIKED's) add a second, appearance stream.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


def unit_bearing(obs: torch.Tensor) -> torch.Tensor:
    """Normalised image points (..., 2) -> unit viewing directions (..., 3) in the camera frame."""
    bearing = torch.cat([obs, torch.ones_like(obs[..., :1])], -1)
    return bearing / bearing.norm(dim=-1, keepdim=True)


class ObservationEncoder(nn.Module):
    """(B,N,P,2) points (+ (B,N,P,D) descriptors) -> (B,N,P,C) features, zero where not observed."""

    def __init__(self, dim: int, desc_dim: int = 0, num_freqs: int = 6):
        super().__init__()
        # Fourier features of the points and their bearing vector: small angles matter for rotation
        self.register_buffer("freqs", 2.0 ** torch.arange(num_freqs) * 0.5, persistent=False)
        in_dim = 5 + 2 * 2 * num_freqs
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.desc = nn.Linear(desc_dim, dim) if desc_dim else None

    def forward(self, obs: torch.Tensor, vis: torch.Tensor, desc: Optional[torch.Tensor] = None) -> torch.Tensor:
        obs = obs.float()
        bearing = unit_bearing(obs)
        ang = (obs[..., None] * self.freqs).flatten(-2)
        x = self.mlp(torch.cat([obs, bearing, ang.sin(), ang.cos()], -1))
        if self.desc is not None and desc is not None:
            x = x + self.desc(desc.float())
        return x * vis.unsqueeze(-1).to(x.dtype)
