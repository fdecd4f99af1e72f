"""Backbone: output dict, freezing, and the pretrained-weights loading path in every supported format."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file

from memposer.models.backbone import build_backbone

TINY = dict(depth=3, embed_dim=48, num_heads=2, img_size=56)


def tiny(seed: int, **kw):
    torch.manual_seed(seed)
    return build_backbone("vit_small_patch14_dinov2", **{**TINY, **kw})


def timm_to_hf(sd):
    """Inverse of the loader's mapping, written independently: timm keys -> Hugging Face Dinov2Model keys."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        if k == "cls_token":
            out["embeddings.cls_token"] = v
        elif k == "pos_embed":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.split(".")[-1]] = v
        elif k.startswith("norm."):
            out["layernorm." + k.split(".")[-1]] = v
        elif m:
            i, rest = m.groups()
            p = f"encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                q, kk, vv = v.chunk(3, dim=0)
                kind = rest.split(".")[-1]
                out[p + f"attention.attention.query.{kind}"] = q
                out[p + f"attention.attention.key.{kind}"] = kk
                out[p + f"attention.attention.value.{kind}"] = vv
            elif rest.startswith("attn.proj."):
                out[p + "attention.output.dense." + rest.split(".")[-1]] = v
            elif rest.startswith("ls"):
                out[p + f"layer_scale{rest[2]}.lambda1"] = v
            else:  # norm1/norm2/mlp.fc1/mlp.fc2 keep their names
                out[p + rest] = v
    out["embeddings.mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    return out


def test_output_dict_and_shapes():
    b = tiny(0)
    out = b(torch.rand(2, 3, 56, 70))
    assert out["grid"] == (4, 5)
    assert out["patch"].shape == (2, 20, 48)
    assert out["cls"].shape == (2, 48)


def test_frozen_and_last_k_trainable():
    b = tiny(0, trainable_blocks=0)
    assert not any(p.requires_grad for p in b.parameters())
    b.set_trainable_blocks(1)
    names = {n for n, p in b.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("vit.blocks.2.") or n.startswith("vit.norm.") for n in names)
    x = torch.rand(1, 3, 56, 56)
    b(x)["patch"].sum().backward()
    assert b.vit.blocks[2].attn.qkv.weight.grad is not None and b.vit.blocks[1].attn.qkv.weight.grad is None
    b.set_trainable_blocks(-1)
    assert all(p.requires_grad for p in b.parameters())


def test_random_weights_warn(caplog):
    with caplog.at_level("WARNING"):
        tiny(0)
    assert "RANDOM weights" in caplog.text


def _assert_same(a, b):
    x = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    a.eval(), b.eval()
    with torch.no_grad():
        diff = (a(x)["patch"] - b(x)["patch"]).abs().max().item()
    assert diff < 1e-5, diff


@pytest.mark.parametrize("fmt", ["timm_safetensors", "timm_pth", "official_pth", "hf_folder", "hf_file_wrapped"])
def test_weights_round_trip(tmp_path, fmt):
    src = tiny(0)
    sd = {k: v.clone() for k, v in src.vit.state_dict().items()}
    if fmt == "timm_safetensors":
        path = tmp_path / "w.safetensors"
        save_file(sd, str(path))
    elif fmt == "timm_pth":
        path = tmp_path / "w.pth"
        torch.save({"state_dict": sd}, path)
    elif fmt == "official_pth":
        path = tmp_path / "dinov2_vits14_pretrain.pth"
        torch.save({**sd, "mask_token": torch.zeros(1, 48)}, path)
    elif fmt == "hf_folder":
        path = tmp_path / "dinov2-small"
        path.mkdir()
        save_file(timm_to_hf(sd), str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps({"model_type": "dinov2", "hidden_size": 48}))
    else:
        path = tmp_path / "pytorch_model.bin"
        torch.save({"dinov2." + k: v for k, v in timm_to_hf(sd).items()}, path)
    dst = tiny(1, weights=str(path))
    assert not torch.equal(tiny(1).vit.blocks[0].attn.qkv.weight, src.vit.blocks[0].attn.qkv.weight)
    _assert_same(src, dst)


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        tiny(0, weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        tiny(0, weights=str(bad))
    wrong = tmp_path / "wide.safetensors"
    save_file(tiny(0, embed_dim=64).vit.state_dict(), str(wrong))
    with pytest.raises(ValueError, match="do not fit"):
        tiny(0, weights=str(wrong))


def test_pos_embed_resampled_on_load(tmp_path):
    """Official weights store a 37x37 grid; a model at another size gets an interpolated copy."""
    src = tiny(0, img_size=84)
    path = tmp_path / "w.safetensors"
    save_file(src.vit.state_dict(), str(path))
    dst = tiny(1, weights=str(path))
    assert dst.vit.pos_embed.shape == (1, 1 + 16, 48)
    assert torch.equal(dst.vit.cls_token, src.vit.cls_token)
