"""MemPoser: forward/backward, permutation equivariance, per-scene memory isolation, predict, checkpoints."""
from pathlib import Path

import numpy as np
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
    assert set(out) == {"R", "t", "conf", "memory_frames"}
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


def test_predict_cluster_accepts_paths_and_arrays(tmp_path):
    from PIL import Image

    m = tiny_model(seed=3)
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (56, 56, 3), dtype=np.uint8) for _ in range(4)]
    paths = []
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    res = m.predict_cluster([str(p) for p in paths])
    R, t, conf = res  # unpacks like the pipeline's predictor
    assert R.shape == (4, 3, 3) and t.shape == (4, 3) and conf.shape == (4,) and R.dtype == np.float64
    assert np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() < 1e-5
    # same pixels as uint8 HWC numpy, as float CHW tensors, as one uint8 batch: same poses
    same = [m.predict_cluster(arrays),
            m.predict_cluster([torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in arrays]),
            m.predict_cluster(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2))]
    for other in same:
        assert np.abs(other.R - R).max() < 1e-5 and np.abs(other.t - t).max() < 1e-5
    # images of different sizes in one cluster are resized one by one
    mixed = m.predict_cluster([rng.integers(0, 255, (40 + 10 * i, 70, 3), dtype=np.uint8) for i in range(3)])
    assert mixed.R.shape == (3, 3, 3) and np.isfinite(mixed.t).all()
    with pytest.raises(ValueError, match="at least one"):
        m.predict_cluster([])
    with pytest.raises(ValueError, match="shape"):
        m.predict_cluster([np.zeros((5, 56, 56))])
    with pytest.raises(FileNotFoundError):
        m.predict_cluster([tmp_path / "missing.png"])


def test_large_cluster_builds_memory_from_a_subset():
    """N > max_memory_frames: the memory reads a diverse subset; every other frame is decoded against it.

    A frame decoded against the memory must get exactly what it would have got inside the memory pass:
    duplicates of the memory frames (never chosen themselves) must get their twins' poses.
    """
    m = tiny_model(seed=4)
    base = torch.rand(8, 3, 56, 56, generator=torch.Generator().manual_seed(5))
    x = torch.cat([base, base])  # every image twice
    out = m.predict(x, max_memory_frames=4)
    mem = out["memory_frames"]
    assert len(mem) == 4 and (mem < 8).all()  # a twin is never picked after its original
    assert (out["R"][:8] - out["R"][8:]).abs().max() < 1e-5
    assert (out["t"][:8] - out["t"][8:]).abs().max() < 1e-5
    assert (out["conf"][:8] - out["conf"][8:]).abs().max() < 1e-5
    # the memory frames themselves get what a cluster of just them gets
    alone = m.predict(base[mem])
    assert (alone["t"] - out["t"][mem]).abs().max() < 1e-5
    # chunking does not matter, the subset does not depend on the frame order (equivariance)
    m.conf["backbone_chunk"] = 3
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(6))
    shuffled = m.predict(x[perm], max_memory_frames=4)
    assert (shuffled["R"] - out["R"][perm]).abs().max() < 1e-5
    # without a limit the whole cluster is decoded together: a different (but valid) answer
    full = m.predict(x, max_memory_frames=100)
    assert len(full["memory_frames"]) == 16 and (full["t"] - out["t"]).abs().max() > 1e-5


def test_float16_export_round_trip(tmp_path):
    m = tiny_model(seed=7)
    full = save_checkpoint(m, tmp_path / "f32.ckpt")
    half = save_checkpoint(m, tmp_path / "f16.ckpt", dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    m2 = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in m2.parameters())
    imgs = torch.rand(5, 3, 56, 56)
    a, b = m.predict(imgs), m2.predict(imgs)
    assert (a["R"] - b["R"]).abs().max() < 1e-2 and (a["R"] - b["R"]).abs().max() > 0
    with pytest.raises(ValueError, match="floating-point"):
        save_checkpoint(m, tmp_path / "x.ckpt", dtype="int8")
