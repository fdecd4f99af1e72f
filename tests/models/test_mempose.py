"""MemPoser: forward/backward, permutation equivariance, per-scene memory isolation, predict, checkpoints."""
from pathlib import Path

import pytest
import torch
import yaml

from memposer.models.checkpoint import save_checkpoint, trained_state_dict
from memposer.models.losses import pose_loss
from memposer.models.mempose import MemPoser, load_checkpoint

TINY = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/model/tiny.yaml").read_text())


def tiny_model(seed=0, **over) -> MemPoser:
    torch.manual_seed(seed)
    conf = {**TINY, **over}
    return MemPoser(conf).eval()


def images(B, K, seed=0, size=56):
    return torch.rand(B, K, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_forward_backward_shapes_and_grads():
    m = tiny_model().train()
    x = images(2, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = m(x, mask)
    assert out["R"].shape == (2, 5, 3, 3) and out["t"].shape == (2, 5, 3) and out["conf"].shape == (2, 5)
    RtR = out["R"] @ out["R"].transpose(-1, -2)
    assert (RtR - torch.eye(3)).abs().max() < 1e-5
    assert torch.allclose(torch.det(out["R"]), torch.ones(2, 5), atol=1e-5)
    assert len(out["memory"].history) == TINY["depth"] and out["memory"].tokens.shape == (2, TINY["memory_slots"], TINY["dim"])
    R_gt = torch.linalg.qr(torch.randn(2, 5, 3, 3))[0]
    R_gt = R_gt * torch.det(R_gt)[..., None, None]
    loss = pose_loss(out, R_gt, torch.randn(2, 5, 3), mask)["loss"]
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    no_grad = [n for n, p in m.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []


def test_permutation_equivariance():
    m = tiny_model()
    x = images(1, 6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        a, b = m(x), m(x[:, perm])
    for k in ("R", "t", "conf"):
        assert (a[k][0, perm] - b[k][0]).abs().max() < 1e-5, k
    # and the memory, a set, does not change at all
    assert (a["memory"].tokens - b["memory"].tokens).abs().max() < 1e-5


def test_scenes_never_share_memory_and_padding_is_inert():
    m = tiny_model()
    x = images(2, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():
        both = m(x, mask)
        alone0 = m(x[:1])
        alone1 = m(x[1:, :3])
        x2 = x.clone()
        x2[1] = torch.rand_like(x2[1])  # another scene-1: scene 0 must not notice
        changed = m(x2, mask)
        x3 = x.clone()
        x3[1, 3:] = 0.5  # different padding content
        padded = m(x3, mask)
    assert (both["R"][0] - alone0["R"][0]).abs().max() < 1e-5
    assert (both["R"][1, :3] - alone1["R"][0]).abs().max() < 1e-5
    assert (changed["R"][0] - both["R"][0]).abs().max() < 1e-6
    assert (changed["R"][1, :3] - both["R"][1, :3]).abs().max() > 1e-4
    assert (padded["t"][1, :3] - both["t"][1, :3]).abs().max() < 1e-6


def test_frames_interact_through_memory():
    """A frame's pose depends on the other frames of its scene (otherwise there is no multi-view model)."""
    m = tiny_model()
    x = images(1, 4)
    with torch.no_grad():
        a = m(x)["R"][0, 0]
        x[0, 1:] = torch.rand_like(x[0, 1:])
        b = m(x)["R"][0, 0]
    assert (a - b).abs().max() > 1e-5


def test_predict_api():
    m = tiny_model()
    imgs = torch.rand(7, 3, 70, 90)
    out = m.predict(imgs)
    assert set(out) == {"R", "t", "conf"}
    assert out["R"].shape == (7, 3, 3) and out["t"].shape == (7, 3) and out["conf"].shape == (7,)
    assert ((out["conf"] > 0) & (out["conf"] < 1)).all()
    with torch.no_grad():
        direct = m(torch.nn.functional.interpolate(imgs, size=(56, 56), mode="bilinear", antialias=True)[None])
    assert (direct["R"][0] - out["R"]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="expects"):
        m.predict(torch.rand(3, 56, 56))


def test_checkpoint_round_trip_trained_backbone(tmp_path):
    m = tiny_model(seed=1)
    path = save_checkpoint(m, tmp_path / "m.ckpt")
    m2 = load_checkpoint(path)
    imgs = torch.rand(5, 3, 56, 56)
    assert (m.predict(imgs)["R"] - m2.predict(imgs)["R"]).abs().max() == 0
    assert m2.conf == m.conf


def test_checkpoint_frozen_backbone_left_out(tmp_path, caplog):
    m = tiny_model(seed=2, backbone={**TINY["backbone"], "trainable_blocks": 1})
    sd = trained_state_dict(m)
    assert "backbone.vit.blocks.1.attn.qkv.weight" in sd  # the trained last block is kept
    assert not any(k.startswith("backbone.vit.blocks.0.") or k.startswith("backbone.vit.patch_embed") for k in sd)
    weights = tmp_path / "dinov2.pth"
    torch.save(m.backbone.vit.state_dict(), weights)  # stands in for the pretrained DINOv2 file
    path = save_checkpoint(m, tmp_path / "m.ckpt")
    imgs = torch.rand(4, 3, 56, 56)
    m2 = load_checkpoint(path, backbone_weights=str(weights))
    assert (m.predict(imgs)["t"] - m2.predict(imgs)["t"]).abs().max() < 1e-6
    with caplog.at_level("WARNING"):
        m3 = load_checkpoint(path)  # no weights: loads, but says the backbone is random
    assert "RANDOM weights" in caplog.text
    assert (m.predict(imgs)["t"] - m3.predict(imgs)["t"]).abs().max() > 1e-6


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a MemPoser checkpoint"):
        load_checkpoint(other)


def test_unknown_model_option():
    with pytest.raises(KeyError, match="unknown model option"):
        MemPoser({**TINY, "dimm": 3})
