"""Per-scene memory: one token per track (a 3D point seen by several frames).

The memory is an explicit value (:class:`MemoryState`) that the decoder layers take and return; no
module keeps it as hidden state. Each scene of a batch has its own rows, so scenes never share
memory. A track's token is written from the observations of it (one per frame that sees it) and
read back by those observations, so what frame i knows of frame j travels through the points they
share: the correspondences the pipeline verified.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from memposer.models.attention import AttentionPool


@dataclass
class MemoryState:
    """Track tokens ``tokens`` (B, P, C) of B scenes; ``mask`` (B, P) marks real tracks."""

    tokens: torch.Tensor
    mask: torch.Tensor

    def updated(self, tokens: torch.Tensor) -> "MemoryState":
        return MemoryState(tokens, self.mask)


def masked_mean(x: torch.Tensor, m: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of ``x`` (..., C) over ``dim`` where ``m`` (x without C) is True; 0 where nothing is."""
    w = m.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(dim) / w.sum(dim).clamp_min(1)


class TrackMemory(nn.Module):
    """Initial memory: a learned token plus the mean of each track's observation features."""

    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def init(self, obs: torch.Tensor, vis: torch.Tensor) -> MemoryState:
        """obs (B,N,P,C) observation features, vis (B,N,P) -> memory of the P tracks."""
        return MemoryState(self.token + self.proj(masked_mean(obs, vis, 1)), vis.any(1))


class MemoryWrite(nn.Module):
    """Each track token attends over its own observations (and itself) and is refined by an MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.pool = AttentionPool(dim, num_heads, mlp_ratio)

    def forward(self, memory: MemoryState, obs: torch.Tensor, vis: torch.Tensor) -> MemoryState:
        B, N, P, C = obs.shape
        per_track = obs.transpose(1, 2).reshape(B * P, N, C)
        tokens = self.pool(memory.tokens.reshape(B * P, C), per_track, vis.transpose(1, 2).reshape(B * P, N))
        return memory.updated(tokens.view(B, P, C))
