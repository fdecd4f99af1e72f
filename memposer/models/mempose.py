"""MemPoser: DINOv2 tokens -> per-scene memory -> shared symmetric decoder -> per-frame pose.

Public API::

    model = MemPoser(conf)                      # conf merged over MemPoser.default_conf
    out = model(images, mask)                   # (B,K,3,H,W) in [0,1], (B,K) bool
    out = model.predict(images)                 # one cluster: (N,3,H,W) -> {"R","t","conf"}
    model = load_checkpoint("checkpoints/x.ckpt")
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from memposer.models.backbone import build_backbone
from memposer.models.decoder import SymmetricDecoder
from memposer.models.heads import PoseHead
from memposer.models.memory import MemoryState, SceneMemory

log = logging.getLogger(__name__)


def merge_conf(default: Dict[str, Any], conf: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Recursive dict merge; unknown keys are an error so typos do not pass silently."""
    out = copy.deepcopy(default)
    for k, v in (conf or {}).items():
        if k not in out:
            raise KeyError(f"unknown model option {k!r}; known: {sorted(out)}")
        if isinstance(out[k], dict) and isinstance(v, dict) and k != "kwargs":
            out[k] = merge_conf(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class MemPoser(nn.Module):
    default_conf: Dict[str, Any] = {
        "backbone": {
            "name": "vit_small_patch14_dinov2",
            "weights": None,          # local file/folder; None -> random weights (warned)
            "trainable_blocks": 0,    # last-k blocks trained; -1 = all
            "kwargs": {},             # timm architecture overrides (tiny test models)
        },
        "image_size": [224, 224],     # (H, W) frames are resized to; multiples of 14
        "dim": 384,
        "num_heads": 6,
        "depth": 4,
        "memory_slots": 32,
        "mlp_ratio": 4.0,
        "token_pool": 1,              # average-pool the patch grid by this factor before the decoder
        "backbone_chunk": 128,        # frames per backbone call in predict()
    }

    def __init__(self, conf: Optional[Dict[str, Any]] = None, warn_if_random: bool = True):
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        bb = conf["backbone"]
        self.backbone = build_backbone(bb["name"], bb["weights"], bb["trainable_blocks"],
                                       img_size=conf["image_size"][0], warn_if_random=warn_if_random,
                                       **bb["kwargs"])
        dim = conf["dim"]
        self.proj_patch = nn.Linear(self.backbone.embed_dim, dim)
        self.proj_cls = nn.Linear(self.backbone.embed_dim, dim)
        self.camera_token = nn.Parameter(torch.randn(1, dim) * 0.02)
        self.memory = SceneMemory(dim, conf["memory_slots"])
        self.decoder = SymmetricDecoder(dim, conf["num_heads"], conf["depth"], conf["mlp_ratio"])
        self.head = PoseHead(dim)

    def frame_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> decoder tokens (N, 1+P, dim); token 0 is the camera token."""
        feats = self.backbone(images)
        patch = feats["patch"]
        p = self.conf["token_pool"]
        if p > 1:
            h, w = feats["grid"]
            grid = patch.transpose(1, 2).reshape(patch.shape[0], -1, h, w)
            patch = F.avg_pool2d(grid, p, ceil_mode=True).flatten(2).transpose(1, 2)
        cam = self.camera_token + self.proj_cls(feats["cls"])
        return torch.cat([cam[:, None], self.proj_patch(patch)], dim=1)

    def decode(self, tokens: torch.Tensor, mask: torch.Tensor,
               memory: Optional[MemoryState] = None) -> Dict[str, Any]:
        """tokens (B,K,T,dim) + mask (B,K) -> poses (B,K,...) and the final memory."""
        memory = memory if memory is not None else self.memory.init(tokens.shape[0])
        frames, memory = self.decoder(tokens, mask, memory)
        out = self.head(frames[:, :, 0])
        out["memory"] = memory
        return out

    def forward(self, images: torch.Tensor, mask: Optional[torch.Tensor] = None,
                memory: Optional[MemoryState] = None) -> Dict[str, Any]:
        """images (B,K,3,H,W) in [0,1]; mask (B,K) True for real frames (default: all).

        Returns ``{"R": (B,K,3,3), "t": (B,K,3), "conf": (B,K), "conf_logit": (B,K), "memory": MemoryState}``
        (world-to-camera, one arbitrary similarity gauge per scene; padded rows are meaningless).
        """
        B, K = images.shape[:2]
        if mask is None:
            mask = torch.ones(B, K, dtype=torch.bool, device=images.device)
        tok = self.frame_tokens(images[mask])  # backbone on real frames only
        tokens = tok.new_zeros(B, K, *tok.shape[1:])
        tokens[mask] = tok
        return self.decode(tokens, mask, memory)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Poses of one cluster's frames: (N,3,H,W) floats in [0,1], any H, W.

        Returns ``{"R": (N,3,3), "t": (N,3), "conf": (N,)}`` (world-to-camera, arbitrary gauge), fp32.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"predict expects (N,3,H,W) images, got {tuple(images.shape)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        H, W = self.conf["image_size"]
        chunks = []
        for chunk in images.split(self.conf["backbone_chunk"]):
            chunk = chunk.to(device, torch.float32)
            if chunk.shape[-2:] != (H, W):
                chunk = F.interpolate(chunk, size=(H, W), mode="bilinear", antialias=True, align_corners=False)
            chunks.append(self.frame_tokens(chunk.clamp(0, 1)))
        tokens = torch.cat(chunks)[None]
        mask = torch.ones(1, tokens.shape[1], dtype=torch.bool, device=device)
        out = self.decode(tokens, mask)
        self.train(was_training)
        return {"R": out["R"][0].float(), "t": out["t"][0].float(), "conf": out["conf"][0].float()}


def load_checkpoint(path, map_location="cpu", backbone_weights: Optional[str] = None) -> MemPoser:
    """Load a MemPoser from a checkpoint (see :mod:`memposer.models.checkpoint`)."""
    from memposer.models.checkpoint import load_checkpoint as _load  # noqa: PLC0415 (import cycle)
    return _load(path, map_location, backbone_weights)
