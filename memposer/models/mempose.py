"""MemPoser: DINOv2 tokens -> per-scene memory -> shared symmetric decoder -> per-frame pose.

Public API::

    model = MemPoser(conf)                      # conf merged over MemPoser.default_conf
    out = model(images, mask)                   # (B,K,3,H,W) in [0,1], (B,K) bool
    out = model.predict(images)                 # one cluster: (N,3,H,W) torch -> {"R","t","conf",...}
    R, t, conf = model.predict_cluster(paths)   # one cluster: paths / images -> numpy (the pipeline's call)
    model = load_checkpoint("checkpoints/x.ckpt", map_location="cuda", backbone_weights=None)
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

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
        "backbone_chunk": 128,        # frames per backbone / decoder call in predict()
        "max_memory_frames": 32,      # inference: larger clusters build the memory from this many frames
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

    # ---- inference -------------------------------------------------------------------------------

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        H, W = self.conf["image_size"]
        if img.shape[-2:] != (H, W):
            img = F.interpolate(img, size=(H, W), mode="bilinear", antialias=True, align_corners=False)
        return img.clamp(0, 1)

    def _autocast(self, device: torch.device, amp: Optional[bool]):
        use = device.type == "cuda" if amp is None else bool(amp)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        return torch.autocast(device.type, dtype=dtype, enabled=use and dtype != torch.float32)

    @torch.no_grad()
    def select_memory_frames(self, cam_tokens: torch.Tensor, k: int) -> torch.Tensor:
        """Indices of ``k`` diverse frames (farthest-point sampling on camera tokens (N, C)).

        Starts from the frame nearest the mean token, so the choice does not depend on frame order.
        """
        x = F.normalize(cam_tokens.float(), dim=-1)
        N = x.shape[0]
        if k >= N:
            return torch.arange(N, device=x.device)
        chosen = [int((x - x.mean(0)).norm(dim=-1).argmin())]
        dist = (x - x[chosen[0]]).norm(dim=-1)
        for _ in range(k - 1):
            i = int(dist.argmax())
            chosen.append(i)
            dist = torch.minimum(dist, (x - x[i]).norm(dim=-1))
        return torch.tensor(sorted(chosen), device=x.device)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, max_memory_frames: Optional[int] = None,
                amp: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """Poses of one cluster's frames: (N,3,H,W) floats in [0,1], any H, W (resized to image_size).

        Up to ``max_memory_frames`` (default ``conf["max_memory_frames"]``) frames are decoded together,
        exactly as in training. A larger cluster builds its memory from that many diverse frames
        (:meth:`select_memory_frames`); every other frame is decoded, in chunks, against that memory
        (:meth:`SymmetricDecoder.forward_with_memory`), so all poses share one gauge and memory cost
        does not grow with N. ``amp``: bf16 autocast (default: on CUDA only).
        Returns ``{"R": (N,3,3), "t": (N,3), "conf": (N,), "memory_frames": (M,) indices}``,
        world-to-camera in an arbitrary similarity gauge, fp32 on the model's device.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"predict expects (N,3,H,W) images, got {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("predict needs at least one image")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        chunk = self.conf["backbone_chunk"]
        limit = max_memory_frames or self.conf["max_memory_frames"]
        try:
            with self._autocast(device, amp):
                tokens = torch.cat([self.frame_tokens(self._resize(c.to(device, torch.float32)))
                                    for c in images.split(chunk)])
                N = tokens.shape[0]
                anchors = self.select_memory_frames(tokens[:, 0], limit)
                mask = torch.ones(1, len(anchors), dtype=torch.bool, device=device)
                out = self.decode(tokens[anchors][None], mask)
                R = out["R"].new_zeros(N, 3, 3)
                t, conf = out["t"].new_zeros(N, 3), out["conf"].new_zeros(N)
                R[anchors], t[anchors], conf[anchors] = out["R"][0], out["t"][0], out["conf"][0]
                rest = torch.ones(N, dtype=torch.bool, device=device)
                rest[anchors] = False
                rest_idx = rest.nonzero()[:, 0]
                history = [h[0] for h in out["memory"].history[-self.conf["depth"]:]]
                for idx in rest_idx.split(chunk):
                    head = self.head(self.decoder.forward_with_memory(tokens[idx], history)[:, 0])
                    R[idx], t[idx], conf[idx] = head["R"], head["t"], head["conf"]
        finally:
            self.train(was_training)
        return {"R": R.float(), "t": t.float(), "conf": conf.float(), "memory_frames": anchors}

    def predict_cluster(self, images: ImageInput, max_memory_frames: Optional[int] = None,
                        amp: Optional[bool] = None) -> ClusterPoses:
        """Poses of ONE cluster's images, for the pipeline: ``R, t, conf = model.predict_cluster(paths)``.

        images: a list of file paths, or of uint8 / float ([0,1]) images as (3,H,W) or (H,W,3) tensors or
        numpy arrays (sizes may differ), or one (N,3,H,W) tensor. Clusters of any size; see :meth:`predict`.
        Returns numpy float64 ``R`` (N,3,3), ``t`` (N,3) world-to-camera (one arbitrary similarity gauge
        for the whole cluster) and ``conf`` (N,) in (0,1).
        """
        H, W = self.conf["image_size"]
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            batch = images.float() / 255 if images.dtype == torch.uint8 else images
        else:
            if len(images) == 0:
                raise ValueError("predict_cluster needs at least one image")
            # each image resized on its own: a cluster's images may differ in size
            batch = torch.stack([to_model_image(im, (H, W)) for im in images])
        out = self.predict(batch, max_memory_frames, amp)
        return ClusterPoses(out["R"].double().cpu().numpy(), out["t"].double().cpu().numpy(),
                            out["conf"].double().cpu().numpy())


class ClusterPoses(NamedTuple):
    """World-to-camera poses of one cluster: R (N,3,3), t (N,3), conf (N,), numpy float64."""

    R: np.ndarray
    t: np.ndarray
    conf: np.ndarray


ImageInput = Union[Sequence[Union[str, Path, torch.Tensor, np.ndarray]], torch.Tensor]


def load_rgb(path: Union[str, Path], size: Sequence[int]) -> torch.Tensor:
    """An image file as RGB uint8 (3, H, W) resized to ``size`` = (H, W); training uses the same resize."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((int(size[1]), int(size[0])), Image.BILINEAR)
            return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
    except OSError as e:
        raise ValueError(f"cannot read image {path}: {e}") from None


def to_model_image(im, size: Sequence[int]) -> torch.Tensor:
    """Path / uint8 or float image, (3,H,W) or (H,W,3), tensor or numpy -> float (3, *size) in [0,1]."""
    if isinstance(im, (str, Path)):
        return load_rgb(im, size).float() / 255
    x = torch.as_tensor(im)
    if x.ndim != 3 or 3 not in (x.shape[0], x.shape[-1]):
        raise ValueError(f"expected an image of shape (3,H,W) or (H,W,3), got {tuple(x.shape)}")
    if x.shape[0] != 3:
        x = x.permute(2, 0, 1)
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[None], size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.clamp(0, 1)


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu",
                    backbone_weights: Optional[str] = None) -> MemPoser:
    """Load a MemPoser in eval mode from a checkpoint (see :func:`memposer.models.checkpoint.load_checkpoint`)."""
    from memposer.models.checkpoint import load_checkpoint as _load  # noqa: PLC0415 (import cycle)
    return _load(path, map_location, backbone_weights)
