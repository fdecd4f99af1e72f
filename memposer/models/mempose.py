"""MemPoser: a scene's point tracks -> per-track memory -> shared symmetric decoder -> per-frame pose.

The input is what the pipeline has verified: for N frames and P tracks, the normalised image point
of each track in each frame that sees it (``obs`` (N,P,2), ``vis`` (N,P)). Frames never exchange
pixels; they exchange what they know through the memory tokens of the tracks they share.

Public API::

    model = MemPoser(conf)                          # conf merged over MemPoser.default_conf
    out = model(obs, vis, mask)                     # batch: (B,N,P,2), (B,N,P), (B,N) -> {"R","t","conf",...}
    out = model.predict(obs, vis)                   # one scene: (N,P,2), (N,P) -> fp32 tensors
    model = load_checkpoint("checkpoints/memposer-tracks.safetensors")
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from memposer.models.decoder import SymmetricDecoder
from memposer.models.encoder import ObservationEncoder
from memposer.models.heads import PoseHead
from memposer.models.memory import TrackMemory, masked_mean


def merge_conf(default: Dict[str, Any], conf: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Recursive dict merge; unknown keys are an error so typos do not pass silently."""
    out = copy.deepcopy(default)
    for k, v in (conf or {}).items():
        if k not in out:
            raise KeyError(f"unknown model option {k!r}; known: {sorted(out)}")
        if isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = merge_conf(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class MemPoser(nn.Module):
    default_conf: Dict[str, Any] = {
        "dim": 128,
        "num_heads": 4,
        "depth": 6,
        "mlp_ratio": 2.0,
        "desc_dim": 0,          # per-observation descriptor size (0: points only)
        "max_tracks": 1024,     # inference: tracks kept per cluster (the longest)
    }

    def __init__(self, conf: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        dim = conf["dim"]
        self.encoder = ObservationEncoder(dim, conf["desc_dim"])
        self.frame_token = nn.Parameter(torch.zeros(dim))
        self.frame_proj = nn.Linear(dim, dim)
        self.memory = TrackMemory(dim)
        self.decoder = SymmetricDecoder(dim, conf["num_heads"], conf["depth"], conf["mlp_ratio"])
        self.head = PoseHead(dim)

    def forward(self, obs: torch.Tensor, vis: torch.Tensor, mask: Optional[torch.Tensor] = None,
                desc: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """obs (B,N,P,2) normalised points, vis (B,N,P) bool, mask (B,N) real frames (default: all).

        Returns ``{"R": (B,N,3,3), "t": (B,N,3), "center", "conf", "conf_logit"}``: world-to-camera,
        one arbitrary similarity gauge per scene; padded frames' rows are meaningless.
        """
        if obs.ndim != 4 or obs.shape[-1] != 2 or vis.shape != obs.shape[:-1]:
            raise ValueError(f"expected obs (B,N,P,2) and vis (B,N,P), got {tuple(obs.shape)}, {tuple(vis.shape)}")
        mask = vis.any(-1) if mask is None else mask
        vis = vis & mask[..., None]
        x = self.encoder(obs, vis, desc)
        frames = self.frame_token + self.frame_proj(masked_mean(x, vis, 2))
        memory = self.memory.init(x, vis)
        frames, memory = self.decoder(frames, mask, x, vis, memory)
        return self.head(frames)

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, vis: torch.Tensor, desc: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Poses of one scene: obs (N,P,2), vis (N,P) -> ``{"R": (N,3,3), "t": (N,3), "conf": (N,)}`` fp32.

        Frames without any observation get the network's output for an empty row and ``conf`` 0.
        """
        if obs.ndim != 3:
            raise ValueError(f"predict expects obs (N,P,2) of one scene, got {tuple(obs.shape)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            vis = vis.to(device).bool()
            out = self(obs.to(device)[None], vis[None], desc=None if desc is None else desc.to(device)[None])
        finally:
            self.train(was_training)
        seen = vis.any(-1)
        return {"R": out["R"][0].float(), "t": out["t"][0].float(), "conf": out["conf"][0].float() * seen}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
