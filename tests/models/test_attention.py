"""Attention backend: SDPA / xformers dispatch, the probe, and equal results from both paths."""
import logging
import types

import pytest
import torch

from memposer.models import attention as A


def reference_mea(q, k, v, attn_bias=None):
    """Independent reference with xformers' layout: (B, L, H, D) and an additive (B, H, Lq, Lk) bias."""
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / q.shape[-1] ** 0.5
    if attn_bias is not None:
        s = s + attn_bias.float()
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1), v.float()).to(q.dtype)


def fake_xops(fn):
    return types.SimpleNamespace(memory_efficient_attention=fn)


@pytest.fixture(autouse=True)
def reset_state():
    saved = dict(A._state)
    yield
    A._state.update(saved)


def qkv(B=2, H=3, Lq=5, Lk=11, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Lq, D, generator=g), torch.randn(B, H, Lk, D, generator=g),
            torch.randn(B, H, Lk, D, generator=g))


def test_xformers_path_matches_sdpa_with_mask():
    q, k, v = qkv()
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 4:] = False
    out_x = A._xformers(fake_xops(reference_mea), q, k, v, mask)
    out_s = A._sdpa(q, k, v, mask)
    assert (out_x - out_s).abs().max() < 1e-5
    # the mask matters: without it scene 1 sees the padded keys
    assert (A._sdpa(q, k, v, None)[1] - out_s[1]).abs().max() > 1e-2
    # masked keys have no influence at all
    v2 = v.clone()
    v2[1, :, 4:] = 1e3
    assert (A._sdpa(q, k, v2, mask) - out_s).abs().max() < 1e-5


def test_probe_accepts_working_and_rejects_broken(caplog):
    assert A.probe_xformers("cpu", xops=fake_xops(reference_mea)) is True

    def broken(*a, **k):
        raise NotImplementedError("No operator found for memory_efficient_attention_forward")

    with caplog.at_level(logging.WARNING):
        assert A.probe_xformers("cpu", xops=fake_xops(broken)) is False
    assert "kernel failed" in caplog.text
    wrong = fake_xops(lambda q, k, v, attn_bias=None: reference_mea(q, k, v, attn_bias) + 1)
    assert A.probe_xformers("cpu", xops=wrong) is False


def test_dispatch_cpu_always_sdpa(monkeypatch):
    q, _, _ = qkv()
    A.set_backend("auto")
    assert A.backend_for(q) == "sdpa"
    A.set_backend("xformers")
    assert A.backend_for(q) == "sdpa"  # CPU tensors never reach xformers
    with pytest.raises(ValueError):
        A.set_backend("flash")


def test_dispatch_falls_back_when_probe_fails(monkeypatch):
    """On a CUDA tensor the choice follows the probe; a failed probe means SDPA (auto) or an error (forced)."""
    cuda_like = types.SimpleNamespace(is_cuda=True, device=torch.device("cpu"))
    monkeypatch.setattr(A, "_import_xops", lambda: None)
    monkeypatch.setattr(A.torch.cuda, "is_available", lambda: True)
    A._state["xformers_ok"] = None
    A.set_backend("auto")
    assert A.backend_for(cuda_like) == "sdpa"
    assert A._state["xformers_ok"] is False
    A.set_backend("xformers")
    with pytest.raises(RuntimeError, match="does not work"):
        A.backend_for(cuda_like)
    A._state["xformers_ok"] = True
    A.set_backend("auto")
    assert A.backend_for(cuda_like) == "xformers"


def test_attention_logs_backend_once(caplog):
    q, k, v = qkv()
    A.set_backend("auto")
    with caplog.at_level(logging.INFO, logger="memposer.models.attention"):
        A.attention(q, k, v)
        A.attention(q, k, v)
    assert caplog.text.count("attention backend: sdpa") == 1


@pytest.mark.skipif(not torch.cuda.is_available() or A._import_xops() is None, reason="needs CUDA and xformers")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_real_xformers_equals_sdpa_on_gpu(dtype):
    assert A.probe_xformers("cuda")
    q, k, v = (t.cuda().to(dtype) for t in qkv(B=3, H=6, Lq=257, Lk=600, D=64))
    mask = torch.ones(3, 600, dtype=torch.bool, device="cuda")
    mask[2, 300:] = False
    out_x = A._xformers(A._import_xops(), q, k, v, mask).float()
    out_s = A._sdpa(q, k, v, mask).float()
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-4}[dtype]
    assert (out_x - out_s).abs().max().item() < tol
