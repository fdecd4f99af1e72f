"""Per-scene memory: learned slots that read a scene's frames by cross-attention, layer by layer.

The memory is an explicit value (:class:`MemoryState`) that functions take and return; no module
keeps it as hidden state. Each scene of a batch has its own row, so scenes never share memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn as nn

from memposer.models.attention import AttentionBlock


@dataclass
class MemoryState:
    """Memory tokens of B scenes: ``tokens`` (B, M, C); ``history`` holds the tokens after each layer."""

    tokens: torch.Tensor
    history: List[torch.Tensor] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def updated(self, tokens: torch.Tensor) -> "MemoryState":
        return MemoryState(tokens, self.history + [tokens])

    def detach(self) -> "MemoryState":
        return MemoryState(self.tokens.detach(), [h.detach() for h in self.history])


class SceneMemory(nn.Module):
    """Learned initial slots; :meth:`init` gives every scene its own copy."""

    def __init__(self, dim: int, num_slots: int):
        super().__init__()
        self.slots = nn.Parameter(torch.randn(num_slots, dim) * 0.02)

    def init(self, batch_size: int) -> MemoryState:
        return MemoryState(self.slots.unsqueeze(0).expand(batch_size, -1, -1))


class MemoryRead(nn.Module):
    """One refinement of the memory: slots attend to each other, then read the scene's frame tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.block = AttentionBlock(dim, num_heads, cross=True, mlp_ratio=mlp_ratio)

    def forward(self, state: MemoryState, frame_tokens: torch.Tensor,
                token_mask: Optional[torch.Tensor] = None) -> MemoryState:
        """frame_tokens: (B, K*T, C) all tokens of each scene's frames; token_mask: (B, K*T), False = padding."""
        return state.updated(self.block(state.tokens, context=frame_tokens, context_mask=token_mask))
