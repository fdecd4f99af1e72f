"""Synthetic track scenes: deterministic, shapes, and observations that obey the true poses."""
import numpy as np

from memposer.data.tracks import collate_track_scenes, sample_batch, sample_scene
from memposer.geometry import camera_center, relative_pose

CLEAN = {"noise_px": [0.0, 0.0], "outliers": [0.0, 0.0], "exif": 1.0, "exif_noise": 0.0}


def test_same_seed_same_scene_and_padding():
    a, b = sample_batch(5, 3), sample_batch(5, 3)
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert not np.array_equal(sample_batch(6, 3)["obs"].numpy(), a["obs"].numpy())
    N = a["mask"].sum(1)
    for i, n in enumerate(N.tolist()):
        assert not a["vis"][i, n:].any() and a["vis"][i, :n].any(-1).all()
    assert (a["vis"].sum(1)[a["vis"].any(1)] >= 2).all()  # every track is seen at least twice


def _epipolar_residuals(s, i=0, j=1):
    obs, vis, R, t = s["obs"].astype(float), s["vis"], s["R"].astype(float), s["t"].astype(float)
    Rij, tij = relative_pose(R[i], t[i], R[j], t[j])
    tx = np.array([[0, -tij[2], tij[1]], [tij[2], 0, -tij[0]], [-tij[1], tij[0], 0]])
    both = vis[i] & vis[j]
    x0, x1 = np.c_[obs[i, both], np.ones(both.sum())], np.c_[obs[j, both], np.ones(both.sum())]
    return np.abs(np.einsum("ni,ij,nj->n", x1, tx @ Rij, x0)) / np.linalg.norm(tij)


def test_clean_observations_satisfy_the_epipolar_constraint():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(5):
        s = sample_scene(rng, CLEAN)
        res = _epipolar_residuals(s)
        if len(res) >= 3:
            assert np.median(res) < 1e-5
            checked += 1
    assert checked >= 1


def test_outliers_break_the_constraint_in_the_share_asked_for():
    rng = np.random.default_rng(1)
    res = np.concatenate([_epipolar_residuals(sample_scene(rng, {**CLEAN, "outliers": [0.5, 0.5]}))
                          for _ in range(8)])
    bad = (res > 1e-3).mean()  # a pair is off if either of its two observations is wrong: 1 - 0.5^2
    assert 0.55 < bad < 0.9, bad


def test_collate_pads_different_sizes():
    rng = np.random.default_rng(2)
    scenes = [sample_scene(rng, {"cameras": [3, 3], "tracks": 40}), sample_scene(rng, {"cameras": [7, 7]})]
    b = collate_track_scenes(scenes)
    assert b["obs"].shape[:2] == (2, max(s["obs"].shape[0] for s in scenes))
    assert b["mask"].sum(1).tolist() == [s["obs"].shape[0] for s in scenes]
    for i, s in enumerate(scenes):  # the EXIF flags follow their frames; padding has none
        n = s["obs"].shape[0]
        assert b["exif"][i, :n].tolist() == s["exif"].tolist() and not b["exif"][i, n:].any()


def test_view_windows_keep_each_point_within_its_angle_and_shorten_tracks():
    from memposer.data.tracks import view_window_mask

    rng = np.random.default_rng(3)
    to_cam = rng.normal(size=(30, 200, 3)) + np.array([0, 0, 3.0])  # rays of 30 cameras to 200 points
    seen = rng.random((30, 200)) < 0.8
    keep = view_window_mask(rng, seen, to_cam, {"view_window": [20.0, 20.0], "view_scale": 100.0})
    ray = to_cam / np.linalg.norm(to_cam, axis=-1, keepdims=True)
    for j in range(200):
        r = ray[keep[:, j], j]
        if len(r) > 1:  # kept rays lie within 2 x 1.3 x 20 degrees of each other (one shared centre)
            assert np.degrees(np.arccos(np.clip(r @ r.T, -1, 1))).max() <= 52.0 + 1e-6
    assert 0 < keep.sum() < seen.sum()

    def median_length(p):
        lens = [np.median(sample_scene(np.random.default_rng(k), {"view_window_p": p, "cameras": [16, 16],
                                                                "layouts": {"orbit": 1.0}})["vis"].sum(0))
                for k in range(6)]
        return float(np.median(lens))
    assert median_length(1.0) < 0.75 * median_length(0.0)



def test_handheld_scenes_are_videos_that_sweep_an_arc_around_an_off_centre_object():
    from memposer.data.tracks import _handheld_cameras

    rng = np.random.default_rng(4)
    for _ in range(5):
        c, target = _handheld_cameras(rng, 40)
        r = np.linalg.norm(c, axis=1)
        assert (r > 2.5 * 0.74).all() and (r < 6.0 * 1.26).all()
        el = np.degrees(np.arcsin(c[:, 2] / r))
        assert (el >= -15 - 1e-9).all() and (el <= 80 + 1e-9).all()
        step = np.linalg.norm(np.diff(c, axis=0), axis=1)  # frames in capture order: small steps
        assert np.median(step) < 0.25 * np.median(r)
        off = np.degrees(np.arctan(np.linalg.norm(target, axis=1) / r))
        assert 0 < np.median(off) < 25  # aimed near, not at, the object's centre
    s = sample_scene(np.random.default_rng(5), {**CLEAN, "layouts": {"handheld": 1.0}})
    assert s["layout"] == "handheld" and np.median(_epipolar_residuals(s)) < 1e-5


def _far_track_share(s, radius=2.0):
    """Share of tracks whose point (triangulated from two views with the true poses) lies beyond ``radius``."""
    R = s["R"].astype(float)
    c = camera_center(R, s["t"].astype(float))
    far = []
    for j in np.flatnonzero(s["vis"].sum(0) >= 2):  # (a dropped camera can leave a track one view)
        i, k = np.flatnonzero(s["vis"][:, j])[:2]
        d = [R[m].T @ np.r_[s["obs"][m, j], 1.0] for m in (i, k)]
        A = np.stack([d[0], -d[1]], 1)  # c_i + a d_i = c_k + b d_k, least squares
        ab = np.linalg.lstsq(A, c[k] - c[i], rcond=None)[0]
        far.append(np.linalg.norm(c[i] + ab[0] * d[0]) > radius)
    return float(np.mean(far))


def test_background_range_is_drawn_per_scene_and_a_number_draws_nothing():
    a = sample_batch(7, 2)
    b = sample_batch(7, 2, {"background": 0.0})
    assert np.array_equal(a["obs"].numpy(), b["obs"].numpy())  # a number draws nothing: old seeds, old scenes
    conf = {**CLEAN, "noise_px": [0.0, 0.0], "layouts": {"orbit": 1.0}, "cameras": [12, 12]}
    assert _far_track_share(sample_scene(np.random.default_rng(0), conf)) == 0.0
    shares = [_far_track_share(sample_scene(np.random.default_rng(k), {**conf, "background": [0.0, 0.6]}))
              for k in range(8)]
    assert max(shares) > 0.1 and max(shares) - min(shares) > 0.1, shares


def test_shared_camera_scenes_share_one_wrong_prior_and_exif_share_is_drawn_per_scene():
    a = sample_batch(9, 2)
    b = sample_batch(9, 2, {"shared_camera": 0.0, "exif": 0.5})
    assert np.array_equal(a["obs"].numpy(), b["obs"].numpy())  # off draws nothing: old seeds, old scenes
    conf = {**CLEAN, "exif": 0.0, "shared_camera": 1.0, "focal_range": [2.0, 3.0], "cameras": [8, 8]}
    s = sample_scene(np.random.default_rng(4), conf)
    ratio = s["focal_ratio"]
    assert np.allclose(ratio, ratio[0]) and ratio[0] < 0.61  # one camera, prior 1.2x long side, truth >= 2x
    # the observations are the true normalised points divided by that one ratio
    true_obs = {**s, "obs": s["obs"] * ratio[:, None, None]}
    assert np.median(_epipolar_residuals(true_obs)) < 1e-5
    assert np.median(_epipolar_residuals(s)) > 1e-3
    many = sample_scene(np.random.default_rng(4), {**conf, "shared_camera": 0.0, "cameras": [12, 12]})
    assert np.ptp(many["focal_ratio"]) > 0.01  # independent cameras: independent focals
    shares = [np.isclose(sample_scene(np.random.default_rng(k), {**CLEAN, "exif": [0.0, 1.0]})["focal_ratio"], 1.0).mean()
              for k in range(10)]
    assert max(shares) - min(shares) > 0.3, shares


def test_global_roll_turns_every_camera_of_a_scene_alike_and_off_draws_nothing():
    a = sample_batch(11, 2)
    b = sample_batch(11, 2, {"roll_global": 0.0})
    assert np.array_equal(a["obs"].numpy(), b["obs"].numpy())  # off draws nothing: old seeds, old scenes
    conf = {**CLEAN, "layouts": {"orbit": 1.0}, "cameras": [12, 12], "roll_flip": 0.0}
    plain = [sample_scene(np.random.default_rng(k), conf) for k in range(6)]
    rolled = [sample_scene(np.random.default_rng(k), {**conf, "roll_global": 1.0}) for k in range(6)]

    def mean_up_z(scenes):  # |z| of each camera's image-up axis in the world (orbits stand on z)
        return np.mean([np.abs(s["R"][:, 1, 2]).mean() for s in scenes])

    assert mean_up_z(plain) > 0.7 and mean_up_z(rolled) < 0.6, (mean_up_z(plain), mean_up_z(rolled))
    for s in rolled:  # still exact geometry
        assert np.median(_epipolar_residuals(s)) < 1e-5


def test_turntable_scenes_are_full_even_rings_aimed_at_the_object():
    conf = {**CLEAN, "layouts": {"turntable": 1.0}, "cameras": [36, 36], "roll_flip": 0.0, "drop": [0.0, 0.0],
            "min_obs_per_camera": 1}
    for k in range(4):
        s = sample_scene(np.random.default_rng(k), conf)
        R, t = s["R"].astype(float), s["t"].astype(float)
        c = camera_center(R, t)
        r = np.linalg.norm(c, axis=1)
        assert np.ptp(r) / r.mean() < 0.1  # one distance
        axis_miss = np.linalg.norm(np.cross(R[:, 2], -c), axis=1) / r  # sin(angle between axis and centre)
        assert axis_miss.max() < 0.1
        el = np.degrees(np.arcsin(c[:, 2] / r))
        order = np.argsort(el)
        ring = np.zeros(len(el), int)
        ring[order] = np.cumsum(np.r_[0, np.diff(el[order]) > 3])  # rings: elevations apart by > 3 degrees
        assert ring.max() <= 1
        for k in range(ring.max() + 1):  # each ring a full, even turn
            az = np.sort(np.arctan2(c[ring == k, 1], c[ring == k, 0]))
            gaps = np.diff(np.r_[az, az[0] + 2 * np.pi])
            assert gaps.max() < 2 * 2 * np.pi / len(az), np.degrees(gaps.max())
        assert np.median(_epipolar_residuals(s)) < 1e-5
