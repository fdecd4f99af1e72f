"""benchmarks/model_eval.py's --reproject sets: points from known poses, inliers, exact reprojections."""
import sys
from pathlib import Path

import numpy as np

from memposer.data.tracks import sample_scene
from memposer.geometry import camera_center

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from model_eval import known_pose_inliers, reprojected_sets, triangulate_known, upright_rolls  # noqa: E402


def _scene(outliers):
    conf = {"noise_px": [0.0, 0.0], "outliers": [outliers, outliers], "exif": 1.0, "exif_noise": 0.0,
            "layouts": {"orbit": 1.0}, "cameras": [10, 10]}
    s = sample_scene(np.random.default_rng(3), conf)
    return s["obs"].astype(float), s["vis"], s["R"].astype(float), s["t"].astype(float)


def test_known_pose_triangulation_is_exact_on_clean_tracks():
    obs, vis, R, t = _scene(0.0)
    _, resid, Xc = triangulate_known(obs, vis, R, t)
    assert np.isinf(resid[~vis]).all()
    assert np.percentile(resid[vis], 99) < 1e-3  # degrees
    proj = Xc[..., :2] / Xc[..., 2:]
    assert np.abs(proj[vis] - obs[vis]).max() < 1e-5


def test_known_pose_inliers_reject_wrong_matches_and_keep_the_right_ones():
    obs, vis, R, t = _scene(0.0)
    rng = np.random.default_rng(0)
    wrong = vis & (rng.random(vis.shape) < 0.2)
    obs = obs.copy()
    obs[wrong] = rng.uniform(-0.6, 0.6, (int(wrong.sum()), 2))
    wrong &= np.linalg.norm(obs - _scene(0.0)[0], axis=-1) > 0.02  # a few land near the truth by chance
    ok, _ = known_pose_inliers(obs, vis, R, t)
    assert (ok & wrong).sum() <= 0.01 * ok.sum()  # a pair of rays can agree by chance; more cannot
    assert not (ok & wrong)[:, ok.sum(0) >= 3].any()
    right = vis & ~wrong
    solid = right & (right.sum(0) >= 3)  # a track with >= 3 right observations out-votes its wrong ones
    assert (ok & solid).sum() >= 0.9 * solid.sum(), ((ok & solid).sum(), solid.sum())  # linear start: 92% here
    sets = reprojected_sets(obs, vis, R, t)
    (kind_inl, (o_inl, v_inl)), (_, (o_ex, v_ex)) = list(sets.items())[1:]
    assert np.array_equal(v_inl, v_ex) and (v_inl.sum(0) >= 2).all() and v_inl.sum() == ok[:, ok.sum(0) >= 2].sum()
    assert f"{v_inl.sum() / vis.sum():.0%}" in kind_inl
    assert np.percentile(np.abs(o_inl[v_inl] - o_ex[v_ex]), 99) < 1e-4  # right ones sit on their reprojections
    assert not o_ex[~v_ex].any()


def test_upright_rolls_turn_the_ring_axis_to_image_up_and_keep_the_geometry():
    conf = {"noise_px": [0.0, 0.0], "outliers": [0.0, 0.0], "exif": 1.0, "exif_noise": 0.0,
            "layouts": {"turntable": 1.0}, "cameras": [12, 12], "roll_global": 1.0}
    s = sample_scene(np.random.default_rng(1), conf)
    R, t = s["R"].astype(float), s["t"].astype(float)
    Rz = upright_rolls(R, t)
    R2, t2 = Rz @ R, np.einsum("nij,nj->ni", Rz, t)
    c = camera_center(R, t)
    normal = np.linalg.svd(c - c.mean(0))[2][2]
    u = np.einsum("nij,j->ni", R2, normal)  # the ring's axis in each rolled camera
    assert np.abs(u[:, 0]).max() < 1e-6 and (u[:, 1] < -0.5).all()  # straight up in every image
    assert (np.abs(np.einsum("nij,j->ni", R, normal)[:, 0]) > 0.3).any()  # it was not before
    assert np.allclose(camera_center(R2, t2), camera_center(R, t))
    obs2 = np.einsum("nij,npj->npi", Rz[:, :2, :2], s["obs"].astype(float)) * s["vis"][..., None]
    ok, _ = known_pose_inliers(obs2, s["vis"], R2, t2)
    assert ok.sum() >= 0.99 * s["vis"].sum()  # the rolled keypoints fit the rolled poses
