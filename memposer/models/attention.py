"""The one attention function every MemPoser layer calls, and the layers built on it.

Backend: ``xformers.ops.memory_efficient_attention`` when xformers imports AND a real probe call on
CUDA works (and matches SDPA), otherwise ``torch.nn.functional.scaled_dot_product_attention``.
CPU tensors always take SDPA. ``MEMPOSER_ATTENTION=sdpa|xformers|auto`` or :func:`set_backend`
force a choice. The chosen backend is logged once.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

BACKENDS = ("auto", "sdpa", "xformers")
_state = {"requested": os.environ.get("MEMPOSER_ATTENTION", "auto"), "xformers_ok": None, "logged": set()}


def set_backend(name: str) -> None:
    """Choose ``auto`` (xformers if it works on this GPU), ``sdpa`` or ``xformers``."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {name!r}")
    _state["requested"] = name
    _state["logged"] = set()


def _import_xops():
    try:
        import xformers.ops as xops  # noqa: PLC0415
        return xops
    except Exception as e:  # ImportError, or a build that does not match this torch
        log.debug("xformers unavailable: %s", e)
        return None


def probe_xformers(device: torch.device | str = "cuda", xops=None) -> bool:
    """True if xformers' kernel runs on ``device`` and agrees with SDPA on a small masked problem."""
    xops = xops if xops is not None else _import_xops()
    if xops is None:
        return False
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(2, 3, 37, 32, generator=g).to(device, torch.float16) for _ in range(3))
        mask = torch.ones(2, 37, dtype=torch.bool, device=device)
        mask[1, 20:] = False
        ref = _sdpa(q, k, v, mask)
        out = _xformers(xops, q, k, v, mask)
        err = (out.float() - ref.float()).abs().max().item()
        if not err < 1e-2:
            log.warning("xformers probe disagrees with SDPA (max abs diff %.3g): using SDPA", err)
            return False
        return True
    except Exception as e:  # e.g. NotImplementedError: no kernel for this GPU / torch build
        log.warning("xformers is installed but its kernel failed on %s (%s: %s): using SDPA",
                    device, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        return False


def _xformers_works() -> bool:
    if _state["xformers_ok"] is None:
        _state["xformers_ok"] = torch.cuda.is_available() and probe_xformers("cuda")
    return bool(_state["xformers_ok"])


def backend_for(x: torch.Tensor) -> str:
    """The backend :func:`attention` uses for tensors like ``x``."""
    req = _state["requested"]
    if req == "sdpa" or not x.is_cuda:
        return "sdpa"
    if _xformers_works():
        return "xformers"
    if req == "xformers":
        raise RuntimeError("attention backend 'xformers' was requested but xformers does not work here")
    return "sdpa"


def _log_once(name: str, x: torch.Tensor) -> None:
    key = (name, x.device.type)
    if key not in _state["logged"]:
        _state["logged"].add(key)
        log.info("attention backend: %s on %s", name, x.device.type)


def _sdpa(q, k, v, key_mask: Optional[torch.Tensor]) -> torch.Tensor:
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _xformers(xops, q, k, v, key_mask: Optional[torch.Tensor]) -> torch.Tensor:
    bias = None
    if key_mask is not None:
        B, H, Lq, _ = q.shape
        Lk = k.shape[2]
        # xformers wants the bias' last dimension 8-aligned in memory: allocate padded, then slice.
        pad = (Lk + 7) // 8 * 8
        bias = torch.zeros(B, H, Lq, pad, dtype=q.dtype, device=q.device)[..., :Lk]
        bias.masked_fill_(~key_mask[:, None, None, :], float("-inf"))
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Softmax attention. q: (B,H,Lq,D), k/v: (B,H,Lk,D), key_mask: (B,Lk) bool, True = attend.

    Every query must have at least one valid key. Returns (B,H,Lq,D).
    """
    name = backend_for(q)
    _log_once(name, q)
    if name == "xformers":
        return _xformers(_import_xops(), q, k, v, key_mask)
    return _sdpa(q, k, v, key_mask)


class MultiHeadAttention(nn.Module):
    """Multi-head (cross-)attention on (B, L, C) tokens through :func:`attention`."""

    def __init__(self, dim: int, num_heads: int, kv_dim: Optional[int] = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        B, Lq, C = x.shape
        H = self.num_heads
        q = self.q(x).view(B, Lq, H, C // H).transpose(1, 2)
        k, v = self.kv(context).view(B, context.shape[1], 2, H, C // H).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, key_mask)
        return self.proj(out.transpose(1, 2).reshape(B, Lq, C))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float = 4.0):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class AttentionBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to a context, MLP."""

    def __init__(self, dim: int, num_heads: int, cross: bool = False, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads)
        self.cross = cross
        if cross:
            self.norm_q = nn.LayerNorm(dim)
            self.norm_ctx = nn.LayerNorm(dim)
            self.cross_attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                context: Optional[torch.Tensor] = None, context_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, key_mask=mask)
        if self.cross:
            x = x + self.cross_attn(self.norm_q(x), self.norm_ctx(context), key_mask=context_mask)
        return x + self.mlp(self.norm2(x))


class AttentionPool(nn.Module):
    """A token reads a set by cross-attention, then an MLP: (M, C) + (M, L, C) set + (M, L) mask -> (M, C).

    The token itself is always one of the keys, so a token whose set is empty (a frame that sees
    no track) keeps a well-defined value.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, token: torch.Tensor, items: torch.Tensor, item_mask: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(token)[:, None]
        kv = torch.cat([q, self.norm_kv(items)], 1)
        mask = torch.cat([item_mask.new_ones(item_mask.shape[0], 1), item_mask], 1)
        x = token + self.attn(q, kv, key_mask=mask)[:, 0]
        return x + self.mlp(self.norm2(x))
