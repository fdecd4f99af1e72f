"""Pair loss: zero on the truth in any gauge, gauge invariance, exact error values, masking, smoothness."""
import math

import numpy as np
import torch

from memposer.geometry import apply_similarity, look_at, quat_to_R, random_rotation
from memposer.models.losses import pair_errors, pose_loss, smoothness_loss


def scene(K=6, seed=0, B=1):
    rng = np.random.default_rng(seed)
    R, t = [], []
    for _ in range(B * K):
        c = rng.normal(size=3) * 2 + np.array([0, 0, -5.0])
        Ri, ti = look_at(c, rng.normal(size=3) * 0.3)
        R.append(Ri), t.append(ti)
    R = torch.tensor(np.array(R), dtype=torch.float64).view(B, K, 3, 3)
    t = torch.tensor(np.array(t), dtype=torch.float64).view(B, K, 3)
    return R, t


def similarity(R, t, seed=1):
    rng = np.random.default_rng(seed)
    Rs = torch.tensor(random_rotation(rng), dtype=R.dtype)
    return apply_similarity(R, t, 3.7, Rs, torch.tensor(rng.normal(size=3), dtype=R.dtype))


def test_truth_in_another_gauge_has_zero_loss():
    R, t = scene()
    mask = torch.ones(1, 6, dtype=torch.bool)
    R2, t2 = similarity(R, t)
    terms = pose_loss({"R": R2, "t": t2}, R, t, mask)
    for k in ("rot", "tdir", "dist"):
        assert terms[k] < 2e-3, (k, terms[k])  # the eps-clamped acos floor is 1.4e-3 rad


def test_loss_is_gauge_invariant():
    R, t = scene(seed=2)
    Rp, tp = scene(seed=3)  # an unrelated prediction
    mask = torch.ones(1, 6, dtype=torch.bool)
    a = pose_loss({"R": Rp, "t": tp}, R, t, mask)
    Rg, tg = similarity(R, t, seed=4)
    b = pose_loss({"R": Rp, "t": tp}, Rg, tg, mask)
    Rq, tq = similarity(Rp, tp, seed=5)
    c = pose_loss({"R": Rq, "t": tq}, R, t, mask)
    for k in ("rot", "tdir", "dist", "loss"):
        assert abs(a[k] - b[k]) < 1e-5 and abs(a[k] - c[k]) < 1e-5, k
    assert a["loss"] > 0.5


def test_one_rotated_frame_gives_exact_pair_errors():
    """Rotating camera 0 by 10 deg about its own axis: the 2(K-1) pairs with frame 0 are off by 10 deg."""
    K = 5
    R, t = scene(K=K, seed=6)
    q = torch.tensor([math.cos(math.radians(5)), 0, 0, math.sin(math.radians(5))], dtype=torch.float64)
    Rp = R.clone()
    Rp[0, 0] = quat_to_R(q) @ R[0, 0]
    e = pair_errors(Rp, t, R, t, torch.ones(1, K, dtype=torch.bool))
    deg = torch.rad2deg(e["rot"][0])
    assert abs(deg[0, 1:].mean() - 10) < 1e-3 and abs(deg[1:, 0].mean() - 10) < 1e-3
    assert deg[1:, 1:].max() < 0.1
    loss = pose_loss({"R": Rp, "t": t}, R, t, torch.ones(1, K, dtype=torch.bool))
    assert abs(math.degrees(loss["rot"]) - 10 * 2 / K) < 0.1


def test_padding_does_not_change_loss_and_grads_are_finite():
    R, t = scene(K=6, seed=7)
    Rp, tp = similarity(R, t)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    Rp2, tp2 = Rp.clone(), tp.clone()
    Rp2[0, 4:] = torch.eye(3, dtype=R.dtype)
    tp2[0, 4:] = 1e6
    a = pose_loss({"R": Rp, "t": tp}, R, t, mask)["loss"]
    b = pose_loss({"R": Rp2, "t": tp2}, R, t, mask)["loss"]
    assert abs(a - b) < 1e-9
    tp3 = tp.clone().requires_grad_(True)
    pose_loss({"R": R.clone().requires_grad_(True), "t": tp3}, R, t, mask)["loss"].backward()
    assert torch.isfinite(tp3.grad).all()


def test_sequence_smoothness_only_for_sequences():
    R, t = scene(K=6, seed=8)
    mask = torch.ones(1, 6, dtype=torch.bool)
    pred = {"R": similarity(R, t, 9)[0], "t": torch.randn(1, 6, 3, dtype=R.dtype)}
    unordered = torch.tensor([False])
    off = pose_loss(pred, R, t, mask, {"w_smooth": 0.0}, unordered)
    on = pose_loss(pred, R, t, mask, {"w_smooth": 1.0}, unordered)
    assert on["loss"] == off["loss"] and "smooth" not in on
    seq = pose_loss(pred, R, t, mask, {"w_smooth": 1.0}, torch.tensor([True]))
    assert seq["smooth"] > 0.1 and seq["loss"] > off["loss"]
    # a constant-velocity, constant-turn trajectory is perfectly smooth
    K = 6
    centers = np.stack([np.array([k * 0.5, 0.0, 0.0]) for k in range(K)])
    Rs = [quat_to_R(np.array([math.cos(0.05 * k), 0, math.sin(0.05 * k), 0])) for k in range(K)]
    Rt = torch.tensor(np.array(Rs))[None]
    tt = torch.tensor(np.array([-Ri @ c for Ri, c in zip(Rs, centers)]))[None]
    assert smoothness_loss(Rt, tt, mask, torch.tensor([True])) < 2e-3
