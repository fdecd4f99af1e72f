"""DINOv2 backbone through timm: patch tokens + class token, frozen but for the last k blocks.

Weights are loaded local-first from a user-given file or folder; nothing is ever downloaded.
Supported formats (detected from the key names, not the file name):

- the official DINOv2 ``.pth`` (``dinov2_vits14_pretrain.pth``: ``blocks.N.attn.qkv``, ``mask_token``),
- a timm state dict, ``.pth``/``.bin``/``.safetensors`` (``blocks.N.attn.qkv``, no ``mask_token``),
- a Hugging Face ``facebook/dinov2-*`` folder or file (``embeddings.*``, ``encoder.layer.N.*``),
  whose separate query/key/value projections are fused into timm's ``qkv``.

Without weights the backbone runs with random initialisation and says so loudly.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Optional

import timm
import torch
import torch.nn as nn
from timm.models.vision_transformer import checkpoint_filter_fn

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


class DinoBackbone(nn.Module):
    """A timm DINOv2 ViT returning ``{"patch": (B,N,C), "cls": (B,C), "grid": (h,w)}``.

    Input images are ``(B,3,H,W)`` floats in [0, 1]; ImageNet normalisation happens inside.
    H and W should be multiples of the patch size (14); other sizes are cropped by the patch embed.
    """

    def __init__(self, vit: nn.Module, name: str, trainable_blocks: int = 0):
        super().__init__()
        self.vit = vit
        self.name = name
        self.embed_dim = int(vit.embed_dim)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.set_trainable_blocks(trainable_blocks)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    def set_trainable_blocks(self, k: int) -> None:
        """Freeze everything but the last ``k`` blocks and the final norm (``k < 0``: train all)."""
        depth = self.depth
        self.trainable_blocks = depth if k < 0 or k > depth else int(k)
        for p in self.vit.parameters():
            p.requires_grad_(k < 0)
        if k >= 0:
            for blk in list(self.vit.blocks)[depth - self.trainable_blocks:]:
                blk.requires_grad_(True)
            if self.trainable_blocks > 0:
                self.vit.norm.requires_grad_(True)

    @property
    def frozen_block_count(self) -> int:
        return self.depth - self.trainable_blocks

    def train(self, mode: bool = True) -> "DinoBackbone":
        super().train(mode)
        if self.trainable_blocks == 0:
            self.vit.eval()  # a fully frozen backbone never uses dropout / drop-path
        return self

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        vit = self.vit
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        n_frozen = self.frozen_block_count
        embed_trainable = any(p.requires_grad for p in vit.patch_embed.parameters())
        # The frozen prefix runs without autograd: it saves the activations' memory.
        with torch.set_grad_enabled(torch.is_grad_enabled() and embed_trainable):
            x = vit.patch_embed(x)
            grid = tuple(x.shape[1:3]) if x.ndim == 4 else vit.patch_embed.grid_size
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
            for blk in list(vit.blocks)[:n_frozen]:
                x = blk(x)
        for blk in list(vit.blocks)[n_frozen:]:
            x = blk(x)
        x = vit.norm(x)
        return {"patch": x[:, self.num_prefix_tokens:], "cls": x[:, 0], "grid": (int(grid[0]), int(grid[1]))}


def build_backbone(name: str = "vit_small_patch14_dinov2", weights: Optional[str] = None,
                   trainable_blocks: int = 0, img_size: int = 518, warn_if_random: bool = True,
                   **timm_kwargs) -> DinoBackbone:
    """Build a DINOv2 ViT from timm (never downloads) and load local weights if given.

    Args:
        name: timm model name, e.g. ``vit_small_patch14_dinov2`` / ``vit_base_patch14_dinov2``.
        weights: path to a weights file or folder (see module docstring); None -> random + warning.
        trainable_blocks: how many of the last blocks get gradients (0: frozen, -1: all).
        img_size: the size the positional embedding is stored at; other sizes are interpolated.
        warn_if_random: set False when the caller restores every backbone weight itself (a checkpoint).
        timm_kwargs: overrides of the timm architecture (tests use a tiny depth / width).
    """
    try:
        vit = timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size,
                                dynamic_img_size=True, **timm_kwargs)
    except RuntimeError as e:  # unknown model name
        raise ValueError(f"unknown timm backbone {name!r}: {e}") from None
    if weights:
        load_backbone_weights(vit, weights)
    elif warn_if_random:
        log.warning("backbone %s runs with RANDOM weights: no DINOv2 weights path was given "
                    "(model.backbone.weights); features are meaningless unless the backbone is trained", name)
    return DinoBackbone(vit, name, trainable_blocks)


def find_weight_file(path: Path) -> Path:
    """The weights file inside a folder (HF / timm layout) or the path itself."""
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    for fname in WEIGHT_FILE_NAMES:
        if (path / fname).is_file():
            return path / fname
    candidates = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(f"no single weights file ({', '.join(WEIGHT_FILE_NAMES)} or *{'/*'.join(WEIGHT_SUFFIXES)}) "
                            f"in folder {path}; found {[p.name for p in candidates]}")


def read_state_dict(path: Path | str) -> Dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a torch pickle, unwrapping common containers."""
    file = find_weight_file(Path(path))
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(file), device="cpu")
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / truncated / wrong format
        raise ValueError(f"could not read backbone weights from {file}: {type(e).__name__}: {e}") from None
    for key in ("model", "state_dict", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{file} does not hold a state dict of tensors")
    # common wrappers: "backbone.", "module.", HF "dinov2."
    for prefix in ("module.", "backbone.", "dinov2."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    if any(k.startswith("dinov2.") for k in sd):  # HF model with a head: keep the trunk only
        sd = {k[len("dinov2."):]: v for k, v in sd.items() if k.startswith("dinov2.")}
    return sd


_HF_RULES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)$", r"blocks.\1.norm\2.\3"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.fc([12])\.(weight|bias)$", r"blocks.\1.mlp.fc\2.\3"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.(weight|bias)$", r"blocks.\1.mlp.w12.\2"),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_out\.(weight|bias)$", r"blocks.\1.mlp.w3.\2"),
    (r"^layernorm\.(weight|bias)$", r"norm.\1"),
]


def hf_to_official(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a Hugging Face Dinov2Model state dict to the official DINOv2 key names."""
    out: Dict[str, torch.Tensor] = {}
    qkv: Dict[str, Dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = re.match(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$", k)
        if m:
            qkv.setdefault(f"blocks.{m.group(1)}.attn.qkv.{m.group(3)}", {})[m.group(2)] = v
            continue
        for pattern, repl in _HF_RULES:
            if re.match(pattern, k):
                out[re.sub(pattern, repl, k)] = v
                break
        else:
            log.debug("ignoring Hugging Face key %s", k)
    for k, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"incomplete query/key/value for {k} in Hugging Face weights")
        out[k] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    out.setdefault("mask_token", torch.zeros(1, out["cls_token"].shape[-1]))  # marks the official layout
    return out


def to_timm_state_dict(sd: Dict[str, torch.Tensor], vit: nn.Module) -> Dict[str, torch.Tensor]:
    """Any supported layout -> the timm model's key names (pos-embed resampled to its grid)."""
    if any(k.startswith("embeddings.") or k.startswith("encoder.layer.") for k in sd):
        sd = hf_to_official(sd)
    # official ViT-g checkpoints chunk blocks as blocks.<chunk>.<i>.*
    if any(re.match(r"^blocks\.\d+\.\d+\.", k) for k in sd):
        sd = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in sd.items()}
    sd = dict(sd)
    return checkpoint_filter_fn(sd, vit)


def load_backbone_weights(vit: nn.Module, path: Path | str) -> None:
    """Load DINOv2 weights (official / timm / Hugging Face, see module docstring) into a timm ViT."""
    sd = to_timm_state_dict(read_state_dict(path), vit)
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    own = vit.state_dict()
    bad_shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
                  if k in own and own[k].shape != v.shape]
    if bad_shapes:
        raise ValueError(f"backbone weights {path} do not fit this architecture (wrong model size?): "
                         + "; ".join(bad_shapes[:5]))
    missing, unexpected = vit.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(f"backbone weights {path} do not match the model: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    log.info("loaded backbone weights from %s (%d tensors)", path, len(sd))
