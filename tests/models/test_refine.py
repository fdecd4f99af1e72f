"""Refinement geometry: canonical gauge, triangulation and residuals behave as geometry says."""
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from memposer.data.tracks import sample_batch
from memposer.geometry import camera_center
from memposer.models.refine import canonical_gauge, ray_features, triangulate

EXACT = {"cameras": [5, 8], "points": 256, "tracks": 64, "noise_px": [0.0, 0.0], "outliers": [0.0, 0.0],
         "exif": 1.0, "exif_noise": 0.0, "roll_flip": 0.0}


def true_poses(b):
    R = b["R"].float()
    return R, camera_center(R, b["t"].float())


def test_exact_tracks_under_true_poses_have_zero_residual_and_wrong_poses_do_not():
    b = sample_batch(0, 3, EXACT)
    R, c = canonical_gauge(*true_poses(b), b["mask"])
    f = ray_features(b["obs"], b["vis"], R, c)
    vis = b["vis"] & (b["vis"].sum(1, keepdim=True) >= 2)
    err = f[..., 11:13][vis].abs()  # tanh(3 * residual) in normalised image units
    assert err.max() < 5e-3 and err.median() < 1e-4
    assert f[..., 13][vis].min() == 1  # every triangulated point in front of its cameras
    Rw = torch.as_tensor(Rotation.from_rotvec(np.full((1, 3), 0.1)).as_matrix(), dtype=torch.float32) @ R
    fw = ray_features(b["obs"], b["vis"], Rw, c)
    assert fw[..., 11:13][vis].abs().median() > 100 * err.median() + 1e-3


def test_features_do_not_depend_on_the_gauge_of_the_input_poses():
    b = sample_batch(1, 2, EXACT)
    R, c = true_poses(b)
    G = torch.as_tensor(Rotation.random(random_state=3).as_matrix(), dtype=torch.float32)
    R2, c2 = R @ G.T, 2.5 * (c @ G.T) + torch.tensor([1.0, -2.0, 0.5])  # another similarity gauge
    f1 = ray_features(b["obs"], b["vis"], *canonical_gauge(R, c, b["mask"]))
    f2 = ray_features(b["obs"], b["vis"], *canonical_gauge(R2, c2, b["mask"]))
    assert (f1 - f2).abs().max() < 1e-3


def test_triangulate_recovers_a_point_from_its_rays():
    X = torch.tensor([0.3, -0.2, 4.0])
    centers = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])[None]
    rays = X - centers[0]
    rays = (rays / rays.norm(dim=-1, keepdim=True))[None, :, None]
    got = triangulate(rays, centers, torch.ones(1, 3, 1, dtype=torch.bool))
    assert (got[0, 0] - X).abs().max() < 0.02  # the ridge pulls it a little towards the origin


def test_refinement_from_given_poses_uses_them_and_their_gauge_does_not_matter():
    from pathlib import Path

    from memposer.models.checkpoint import load_checkpoint
    from memposer.training.metrics import relative_errors_deg

    model = load_checkpoint(Path(__file__).resolve().parents[2] / "checkpoints" / "memposer-tracks.safetensors")
    b = sample_batch(515151, 2, {"cameras": [8, 12]})
    c = camera_center(b["R"], b["t"])
    G = torch.from_numpy(Rotation.random(random_state=0).as_matrix()).float()
    with torch.no_grad():
        plain = model(b["obs"], b["vis"], b["mask"])
        true = model(b["obs"], b["vis"], b["mask"], init=(b["R"], c))
        moved = model(b["obs"], b["vis"], b["mask"], init=(b["R"] @ G.T, 3.0 * c @ G.T + 1.0))  # another similarity
    assert torch.allclose(plain["passes"][0]["R"], true["passes"][0]["R"])  # the decoder's pass is unchanged
    err = {k: float(np.median(relative_errors_deg(o["R"], o["t"], b["R"], b["t"], b["mask"])["rot"]))
           for k, o in (("plain", plain), ("true", true), ("moved", moved))}
    # the start matters and the truth stays near: v3 moves exact poses by ~3 deg (a known limit: its
    # refiner never started from exact poses in training; checkpoints/README.md)
    assert not torch.allclose(true["R"], plain["R"], atol=1e-3) and err["true"] < 5, err
    assert abs(err["moved"] - err["true"]) < 0.01, err  # the canonical gauge removes the similarity (fp32)
