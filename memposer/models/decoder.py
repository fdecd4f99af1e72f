"""Shared symmetric decoder: the same blocks, same weights, for every frame; no reference view.

Per layer: every observation (frame i, track j) mixes in its frame's token and its track's memory
token; the memory tracks read their observations; the frames read theirs and then attend to each
other. Nothing depends on the position of a frame or a track in the input, so permuting frames (or
tracks) permutes the outputs and nothing else: equivariant in frames and in tracks.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from memposer.models.attention import AttentionBlock, AttentionPool
from memposer.models.memory import MemoryState, MemoryWrite


class ObservationUpdate(nn.Module):
    """x_ij += MLP([x_ij, frame_i, track_j]); the first linear layer is split so nothing is tiled."""

    def __init__(self, dim: int, mlp_ratio: float = 2.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm_x, self.norm_f, self.norm_m = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.lin_x = nn.Linear(dim, hidden)
        self.lin_f = nn.Linear(dim, hidden, bias=False)
        self.lin_m = nn.Linear(dim, hidden, bias=False)
        self.out = nn.Linear(hidden, dim)

    def forward(self, obs, vis, frames, memory: MemoryState) -> torch.Tensor:
        h = (self.lin_x(self.norm_x(obs)) + self.lin_f(self.norm_f(frames))[:, :, None]
             + self.lin_m(self.norm_m(memory.tokens))[:, None])
        return obs + self.out(nn.functional.gelu(h)) * vis.unsqueeze(-1).to(obs.dtype)


class DecoderLayer(nn.Module):
    """One layer; ``write_memory=False`` for the last one, whose memory no later layer would read."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, write_memory: bool = True):
        super().__init__()
        self.obs_update = ObservationUpdate(dim, mlp_ratio)
        self.memory_write = MemoryWrite(dim, num_heads, mlp_ratio) if write_memory else None
        self.frame_read = AttentionPool(dim, num_heads, mlp_ratio)
        self.frame_block = AttentionBlock(dim, num_heads, mlp_ratio=mlp_ratio)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, obs: torch.Tensor, vis: torch.Tensor,
                memory: MemoryState) -> Tuple[torch.Tensor, torch.Tensor, MemoryState]:
        B, N, P, C = obs.shape
        obs = self.obs_update(obs, vis, frames, memory)
        if self.memory_write is not None:
            memory = self.memory_write(memory, obs, vis)
        frames = self.frame_read(frames.reshape(B * N, C), obs.reshape(B * N, P, C), vis.reshape(B * N, P)).view(B, N, C)
        frames = self.frame_block(frames, mask=mask)
        return frames, obs, memory


class SymmetricDecoder(nn.Module):
    """``depth`` layers: frames (B,N,C), mask (B,N), obs (B,N,P,C), vis (B,N,P), memory -> refined."""

    def __init__(self, dim: int, num_heads: int, depth: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, mlp_ratio, write_memory=i < depth - 1)
                                    for i in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames, mask, obs, vis, memory: MemoryState) -> Tuple[torch.Tensor, torch.Tensor, MemoryState]:
        """-> (normalised frame tokens, observation tokens, memory) after the last layer."""
        for layer in self.layers:
            frames, obs, memory = layer(frames, mask, obs, vis, memory)
        return self.norm(frames), obs, memory
