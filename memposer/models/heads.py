"""Pose head: per frame, a 6D rotation, a camera centre (scene gauge) and a confidence."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn

from memposer.geometry import rot6d_to_R, t_from_center


class PoseHead(nn.Module):
    """Frame token (..., C) -> ``{"R": (...,3,3), "t": (...,3), "conf": (...), "conf_logit": (...)}``.

    R, t are world-to-camera in the scene's arbitrary similarity gauge (the loss is gauge-free:
    :mod:`memposer.models.losses`). The network predicts the camera centre and ``t = -R c``, so
    translation directions between cameras do not depend on the rotations.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 10))
        with torch.no_grad():  # start near the identity rotation, centres near 0, conf 0.5
            self.mlp[-1].weight.mul_(0.1)
            self.mlp[-1].bias.zero_()
            self.mlp[-1].bias[:6] = torch.tensor([1.0, 0, 0, 0, 1.0, 0])

    def forward(self, token: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = self.mlp(token).float()  # poses in fp32 even under autocast
        R = rot6d_to_R(out[..., :6])
        logit = out[..., 9]
        return {"R": R, "t": t_from_center(R, out[..., 6:9]), "center": out[..., 6:9],
                "conf": torch.sigmoid(logit), "conf_logit": logit}
