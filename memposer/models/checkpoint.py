"""MemPoser checkpoints: only the trained parameters, plus the model config and backbone name.

A frozen backbone's weights are not stored (they come from the DINOv2 weights file named in the
config, or the ``backbone_weights`` argument). Lightning's training checkpoints hold the same
``memposer`` entry and a filtered ``state_dict``, so :func:`load_checkpoint` reads both.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch

log = logging.getLogger(__name__)

FORMAT = "memposer-checkpoint"
VERSION = 1


def trained_state_dict(model) -> Dict[str, torch.Tensor]:
    """Parameters that training changes (everything but the frozen backbone) and non-backbone buffers."""
    sd = model.state_dict()
    keep = {n for n, p in model.named_parameters() if p.requires_grad or not n.startswith("backbone.")}
    keep |= {n for n, _ in model.named_buffers() if not n.startswith("backbone.")}
    return {k: v.detach().cpu() for k, v in sd.items() if k in keep}


def checkpoint_meta(model) -> Dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "config": model.conf, "backbone": model.conf["backbone"]["name"]}


def save_checkpoint(model, path: Path | str, extra: Optional[Dict[str, Any]] = None,
                    dtype: Optional[torch.dtype | str] = None) -> Path:
    """Write ``{"memposer": meta, "state_dict": trained params, **extra}`` to ``path``.

    ``dtype`` (e.g. ``float16``) stores floating-point tensors in that type to halve the file;
    :func:`load_checkpoint` casts them back to the model's fp32 parameters.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = trained_state_dict(model)
    if dtype is not None:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"checkpoint dtype must be a floating-point torch dtype, got {dtype!r}")
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    ckpt = {"memposer": checkpoint_meta(model), "state_dict": sd, **(extra or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the final name
    return path


def _read(path: Path, map_location) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"MemPoser checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise ValueError(f"MemPoser checkpoint {path} is corrupt or not a torch file ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "memposer" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a MemPoser checkpoint (no 'memposer' / 'state_dict' entries)")
    meta = ckpt["memposer"]
    if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')} v{meta.get('version')}")
    return ckpt


def load_checkpoint(path: Path | str, map_location="cpu", backbone_weights: Optional[str] = None):
    """Rebuild the MemPoser of a checkpoint (ours or a Lightning training checkpoint) in eval mode.

    Args:
        path: a file written by :func:`save_checkpoint` (``train.py``'s ``export``) or a Lightning
            checkpoint of ``train.py`` (``outputs/train/checkpoints/last.ckpt``).
        map_location: device the model is put on (``"cpu"``, ``"cuda"``, ``torch.device``).
        backbone_weights: DINOv2 weights for a frozen backbone, overriding the path in the config;
            ignored when the checkpoint holds the whole (trained) backbone.
    """
    from memposer.models.mempose import MemPoser  # noqa: PLC0415 (import cycle)

    path = Path(path)
    ckpt = _read(path, map_location)
    sd = ckpt["state_dict"]
    if any(k.startswith("model.") for k in sd):  # Lightning: keys of the LightningModule
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    conf = dict(ckpt["memposer"]["config"])
    conf["backbone"] = dict(conf["backbone"])
    if backbone_weights is not None:
        conf["backbone"]["weights"] = backbone_weights
    has_full_backbone = "backbone.vit.patch_embed.proj.weight" in sd  # trained with every backbone layer
    if has_full_backbone:
        conf["backbone"]["weights"] = None
    elif not conf["backbone"]["weights"] or not Path(conf["backbone"]["weights"]).exists():
        log.warning("checkpoint %s does not hold the frozen backbone and its weights (%s) are not available: "
                    "the backbone runs with RANDOM weights and poses will be meaningless; pass backbone_weights=",
                    path, conf["backbone"]["weights"])
        conf["backbone"]["weights"] = None
    model = MemPoser(conf, warn_if_random=False)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if has_full_backbone or not k.startswith("backbone.")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its model config: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu").eval()
