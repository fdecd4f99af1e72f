"""Shared symmetric decoder: the same blocks, same weights, for every frame; no reference view.

Per layer, the memory reads all frames of its scene, then every frame attends within itself and to
its scene's memory. Nothing depends on a frame's position in the input, so shuffling the frames
shuffles the outputs and nothing else (permutation equivariance).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn

from memposer.models.attention import AttentionBlock
from memposer.models.memory import MemoryRead, MemoryState


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.memory_read = MemoryRead(dim, num_heads, mlp_ratio)
        self.frame_block = AttentionBlock(dim, num_heads, cross=True, mlp_ratio=mlp_ratio)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, memory: MemoryState) -> Tuple[torch.Tensor, MemoryState]:
        B, K, T, C = frames.shape
        token_mask = mask[:, :, None].expand(B, K, T).reshape(B, K * T)
        memory = self.memory_read(memory, frames.reshape(B, K * T, C), token_mask)
        # Only real frames go through the frame block; padding rows stay untouched.
        scene_of_frame = torch.arange(B, device=frames.device)[:, None].expand(B, K)[mask]
        updated = self.frame_block(frames[mask], context=memory.tokens[scene_of_frame])
        out = frames.clone()
        out[mask] = updated
        return out, memory

    def frames_only(self, frames: torch.Tensor, memory_tokens: torch.Tensor) -> torch.Tensor:
        """Frames (N, T, C) of one scene attend to a given memory (M, C), which does not read them."""
        return self.frame_block(frames, context=memory_tokens[None].expand(frames.shape[0], -1, -1))


class SymmetricDecoder(nn.Module):
    """``depth`` layers; frames (B, K, T, C) + mask (B, K) + memory -> refined frames and memory."""

    def __init__(self, dim: int, num_heads: int, depth: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, memory: MemoryState) -> Tuple[torch.Tensor, MemoryState]:
        for layer in self.layers:
            frames, memory = layer(frames, mask, memory)
        return self.norm(frames), memory

    def forward_with_memory(self, frames: torch.Tensor, history: Sequence[torch.Tensor]) -> torch.Tensor:
        """Frames (N, T, C) of one scene decoded against the per-layer memory of an earlier pass.

        ``history[l]`` (M, C) is the memory layer ``l`` read from that pass' frames. A frame decoded
        here gets exactly the output it would get in that pass, had the memory not read it.
        """
        if len(history) != len(self.layers):
            raise ValueError(f"need {len(self.layers)} memory layers, got {len(history)}")
        for layer, mem in zip(self.layers, history):
            frames = layer.frames_only(frames, mem)
        return self.norm(frames)
