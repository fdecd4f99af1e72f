"""MemPoser checkpoints that load without executing code.

The shipped format is a **safetensors** file: the model's tensors plus a JSON header entry
``memposer`` = ``{"format", "version", "config", ...}`` (safetensors metadata). Reading it parses
JSON and raw tensor bytes only. Lightning training checkpoints (``last.ckpt``) are read with
``torch.load(weights_only=True)``, which refuses any pickled object that is not plain data.
Files of the old image model (format version 1) are refused with a message.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

log = logging.getLogger(__name__)

FORMAT = "memposer-checkpoint"
VERSION = 2  # 2: the track model; 1 was the image model with a slot memory (not loadable)


def checkpoint_meta(model, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "model": "tracks", "config": model.conf, **(extra or {})}


def save_checkpoint(model, path: Path | str, extra: Optional[Dict[str, Any]] = None,
                    dtype: Optional[torch.dtype | str] = None) -> Path:
    """Write the model's state dict and ``checkpoint_meta`` (+ JSON-able ``extra``) as safetensors.

    ``dtype`` (e.g. ``float16``) stores floating-point tensors in that type to halve the file;
    :func:`load_checkpoint` casts them back to the model's fp32 parameters. Written to a temporary
    name and renamed, so a crash never leaves a half-written checkpoint under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if dtype is not None:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"checkpoint dtype must be a floating-point torch dtype, got {dtype!r}")
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    meta = json.dumps(checkpoint_meta(model, extra), default=float)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={"memposer": meta})
    tmp.replace(path)
    return path


def _check_meta(meta: Any, path: Path) -> Dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a MemPoser checkpoint (no 'memposer' entry)")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: MemPoser checkpoint format v{meta.get('version')} is not supported by this "
                         f"version (v{VERSION}, the track model); retrain with train.py or use the shipped checkpoint")
    return meta


def read_checkpoint(path: Path | str) -> tuple:
    """``(meta, state_dict)`` of a safetensors export or a Lightning ``.ckpt``, without running code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MemPoser checkpoint not found: {path} (see checkpoints/README.md)")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch zip / legacy pickle: Lightning checkpoints
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: refused to load ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                             "only plain-data checkpoints load (no pickled code)") from None
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise ValueError(f"{path} is not a MemPoser checkpoint (no 'state_dict')")
        meta = _check_meta(ckpt.get("memposer"), path)
        sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        return meta, sd
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("memposer")
        meta = _check_meta(json.loads(raw) if raw else None, path)
        return meta, load_file(str(path))
    except (SafetensorError, json.JSONDecodeError, OSError) as e:
        raise ValueError(f"MemPoser checkpoint {path} is corrupt or not a safetensors file ({e})") from None


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu"):
    """Rebuild the MemPoser of a checkpoint (export or Lightning training checkpoint), in eval mode."""
    from memposer.models.mempose import MemPoser  # noqa: PLC0415 (mempose does not import this module)

    meta, sd = read_checkpoint(path)
    model = MemPoser(meta["config"])
    missing, unexpected = model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                                                strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not match its model config: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    model.checkpoint_meta = meta
    return model.to(map_location).eval()
