"""MemPoser: a scene's point tracks -> per-track memory -> shared symmetric decoder -> per-frame pose.

The input is what the pipeline has verified: for N frames and P tracks, the normalised image point
of each track in each frame that sees it (``obs`` (N,P,2), ``vis`` (N,P)). Frames never exchange
pixels; they exchange what they know through the memory tokens of the tracks they share.

Public API::

    model = MemPoser(conf)                          # conf merged over MemPoser.default_conf
    out = model(obs, vis, mask)                     # batch: (B,N,P,2), (B,N,P), (B,N) -> {"R","t","conf",...}
    out = model.predict(obs, vis)                   # one scene: (N,P,2), (N,P) -> fp32 tensors
    out = model.predict(obs, vis, exif=flags)       # (N,) bool: the focal prior came from EXIF (exif_input)
    out = model.predict(obs, vis, init=(R, c))      # refinement starts from given poses (e.g. rotation averaging)
    model = load_checkpoint("checkpoints/memposer-tracks.safetensors")
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from memposer.config import merge_strict
from memposer.geometry import t_from_center
from memposer.models.decoder import SymmetricDecoder
from memposer.models.encoder import ObservationEncoder
from memposer.models.heads import PoseHead
from memposer.models.memory import TrackMemory, masked_mean
from memposer.models.refine import RayEncoder, canonical_gauge


class MemPoser(nn.Module):
    default_conf: Dict[str, Any] = {
        "dim": 128,
        "num_heads": 4,
        "depth": 6,
        "mlp_ratio": 2.0,
        "desc_dim": 0,          # per-observation descriptor size (0: points only)
        "max_tracks": 1024,     # inference: tracks kept per cluster (the longest)
        "refine_iters": 0,      # pose-conditioned refinement passes after the decoder (models/refine.py)
        "refine_depth": 2,      # layers of the shared refiner (same weights in every pass)
        # Per-frame flag "this image's focal prior came from EXIF": without it the model cannot tell
        # a near-true prior from COLMAP's 1.2 x long side guess, so it must distrust every focal.
        "exif_input": False,
    }

    def __init__(self, conf: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.conf = conf = merge_strict(self.default_conf, conf, "model.")
        dim = conf["dim"]
        self.encoder = ObservationEncoder(dim, conf["desc_dim"])
        self.frame_token = nn.Parameter(torch.zeros(dim))
        self.frame_proj = nn.Linear(dim, dim)
        if conf["exif_input"]:  # zero at first: a model fine-tuned from one without it starts where that one was
            self.exif_token = nn.Parameter(torch.zeros(dim))
        self.memory = TrackMemory(dim)
        self.decoder = SymmetricDecoder(dim, conf["num_heads"], conf["depth"], conf["mlp_ratio"])
        self.head = PoseHead(dim)
        if conf["refine_iters"] > 0:
            self.ray_encoder = RayEncoder(dim)
            self.refiner = SymmetricDecoder(dim, conf["num_heads"], conf["refine_depth"], conf["mlp_ratio"])
            self.refine_head = PoseHead(dim)  # starts at the identity update

    def forward(self, obs: torch.Tensor, vis: torch.Tensor, mask: Optional[torch.Tensor] = None,
                desc: Optional[torch.Tensor] = None,
                init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                exif: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """obs (B,N,P,2) normalised points, vis (B,N,P) bool, mask (B,N) real frames (default: all).

        ``exif`` (B,N) bool: the frame's focal prior came from EXIF; used with ``exif_input``
        (missing = no frame has EXIF), ignored without.

        ``init`` = (R (B,N,3,3) world-to-camera, centres (B,N,3)), any gauge: the first refinement
        pass starts from these poses instead of the decoder's (which are still returned first in
        ``"passes"``); ignored without refinement passes.

        Returns ``{"R": (B,N,3,3), "t": (B,N,3), "center", "conf", "conf_logit"}``: world-to-camera,
        one arbitrary similarity gauge per scene; padded frames' rows are meaningless. With
        ``refine_iters`` > 0 these are the last pass's, and ``"passes"`` lists every earlier pass's
        output (for the loss), first the decoder's.
        """
        if obs.ndim != 4 or obs.shape[-1] != 2 or vis.shape != obs.shape[:-1]:
            raise ValueError(f"expected obs (B,N,P,2) and vis (B,N,P), got {tuple(obs.shape)}, {tuple(vis.shape)}")
        mask = vis.any(-1) if mask is None else mask
        vis = vis & mask[..., None]
        x = self.encoder(obs, vis, desc)
        frames = self.frame_token + self.frame_proj(masked_mean(x, vis, 2))
        if self.conf["exif_input"] and exif is not None:
            frames = frames + exif.to(frames.dtype)[..., None] * self.exif_token
        memory = self.memory.init(x, vis)
        frames, x, memory = self.decoder(frames, mask, x, vis, memory)
        out = self.head(frames)
        passes = []
        for k in range(self.conf["refine_iters"]):
            passes.append(out)
            prev = {"R": init[0], "center": init[1]} if k == 0 and init is not None else out
            out, frames, x, memory = self._refine(prev, frames, mask, obs, x, vis, memory)
        if passes:
            out["passes"] = passes
        return out

    def _refine(self, prev, frames, mask, obs, x, vis, memory):
        """One refinement pass from the previous poses (detached) -> (poses, frames, obs tokens, memory)."""
        with torch.autocast(obs.device.type, enabled=False):  # geometry in fp32 (SVD, solve) under AMP
            R, c = canonical_gauge(prev["R"].detach().float(), prev["center"].detach().float(), mask)
        rx, rf = self.ray_encoder(obs, vis, R, c)
        frames, x, memory = self.refiner(frames + rf, mask, x + rx, vis, memory)
        delta = self.refine_head(frames)
        with torch.autocast(obs.device.type, enabled=False):
            R = delta["R"].float() @ R   # the update is applied in each camera's own frame
            c = c + delta["center"].float()
        out = {"R": R, "t": t_from_center(R, c), "center": c, "conf": delta["conf"], "conf_logit": delta["conf_logit"]}
        return out, frames, x, memory

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, vis: torch.Tensor, desc: Optional[torch.Tensor] = None,
                init: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                exif: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Poses of one scene: obs (N,P,2), vis (N,P) -> ``{"R": (N,3,3), "t": (N,3), "conf": (N,)}`` fp32.

        ``init`` = (R (N,3,3), centres (N,3)): starting poses of the refinement (see ``forward``).
        ``exif`` (N,) bool: focal priors from EXIF (see ``forward``).

        Frames without any observation get the network's output for an empty row and ``conf`` 0.
        """
        if obs.ndim != 3:
            raise ValueError(f"predict expects obs (N,P,2) of one scene, got {tuple(obs.shape)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            vis = vis.to(device).bool()
            init = None if init is None else tuple(torch.as_tensor(a, dtype=torch.float32, device=device)[None]
                                                   for a in init)
            exif = None if exif is None else torch.as_tensor(exif, device=device).bool()[None]
            out = self(obs.to(device)[None], vis[None], desc=None if desc is None else desc.to(device)[None],
                       init=init, exif=exif)
        finally:
            self.train(was_training)
        seen = vis.any(-1)
        return {"R": out["R"][0].float(), "t": out["t"][0].float(), "conf": out["conf"][0].float() * seen}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
