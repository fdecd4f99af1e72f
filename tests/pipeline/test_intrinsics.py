"""The last adjustment of a mapper model: one shared camera where the images are one camera, a camera
per image where they are not (real pycolmap bundle adjustment on exact projections + noise)."""
from __future__ import annotations

import numpy as np
import pycolmap
import pytest

from memposer.pipeline import intrinsics

W, H = 1024, 768


def _look_at(centre: np.ndarray, target: np.ndarray) -> pycolmap.Rigid3d:
    z = (target - centre) / np.linalg.norm(target - centre)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])  # world-to-camera rows
    return pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ centre)


def _scene(focals, start_focals, noise: float = 0.5, seed: int = 0) -> pycolmap.Reconstruction:
    """Cameras on an arc around a cloud of points, image i seen with focal ``focals[i]`` (+ pixel
    noise); the returned model holds the true poses and points but starts from ``start_focals``."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (300, 3)) * [1.5, 1.0, 0.5]
    rec = pycolmap.Reconstruction()
    obs = {}
    for i, (f, f0) in enumerate(zip(focals, start_focals)):
        a = np.deg2rad(-40 + 80 * i / (len(focals) - 1))
        pose = _look_at(np.array([6 * np.sin(a), 0.3 * rng.normal(), -6 * np.cos(a)]), np.zeros(3))
        cam = pycolmap.Camera(model="SIMPLE_RADIAL", width=W, height=H, params=[f, W / 2, H / 2, 0.0], camera_id=i + 1)
        xy = np.stack([cam.img_from_cam(pose * p) for p in points]) + noise * rng.normal(size=(len(points), 2))
        cam.params = [f0, W / 2, H / 2, 0.0]
        rec.add_camera_with_trivial_rig(cam)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{i}.png", keypoints=xy, camera_id=i + 1, image_id=i + 1), pose)
        obs[i + 1] = xy
    for k, p in enumerate(points):
        rec.add_point3D(p, pycolmap.Track([pycolmap.TrackElement(i, k) for i in obs]))
    return rec


def _focal_errors(rec: pycolmap.Reconstruction, focals) -> np.ndarray:
    return np.array([abs(rec.cameras[rec.images[i + 1].camera_id].params[0] / f - 1) for i, f in enumerate(focals)])


def test_one_camera_is_found_and_its_focal_recovered():
    rng = np.random.default_rng(1)
    true = np.full(12, 1280.0)
    start = true * rng.uniform(0.8, 1.2, 12)  # the mapper's per-image focals, wrong by up to 20%
    rec = _scene(true, start)
    out, stats = intrinsics.refine(rec, {}, num_threads=1)
    assert stats["intrinsics_shared"] == 1.0 and len(out.cameras) == 1
    assert stats["intrinsics_error_shared"] <= 1.1 * stats["intrinsics_error_each"]
    assert _focal_errors(out, true).max() < 0.01
    assert out.num_reg_images() == 12 and out.num_points3D() == 300
    assert len(rec.cameras) == 12  # the input model is left as it was


def test_cameras_that_differ_keep_their_own_focal():
    rng = np.random.default_rng(2)
    true = 1280.0 * rng.uniform(0.8, 1.2, 12)  # twelve different cameras
    rec = _scene(true, np.full(12, 1280.0))
    out, stats = intrinsics.refine(rec, {}, num_threads=1)
    assert stats["intrinsics_shared"] == 0.0 and len(out.cameras) == 12
    assert stats["intrinsics_error_shared"] > 1.5 * stats["intrinsics_error_each"]
    assert _focal_errors(out, true).max() < 0.01


def test_images_of_one_camera_share_it_beside_images_of_others():
    """Nine images of one camera and three of others: the group as a whole fails the test, the nine
    share a camera and the three keep theirs (``share_partial``); with it off (the default) all twelve
    keep theirs."""
    rng = np.random.default_rng(3)
    true = np.full(12, 1280.0)
    true[[2, 6, 10]] = [800.0, 1900.0, 2400.0]
    rec = _scene(true, true * rng.uniform(0.85, 1.15, 12))
    out, stats = intrinsics.refine(rec, {"share_partial": True}, num_threads=1)
    assert stats["intrinsics_shared"] == 0.0 and stats["intrinsics_partial_images"] == 9.0
    cams = [out.images[i + 1].camera_id for i in range(12)]
    assert len({cams[i] for i in range(12) if i not in (2, 6, 10)}) == 1
    assert len(set(cams)) == 4 and len(out.cameras) == 4
    assert _focal_errors(out, true).max() < 0.01
    assert stats["intrinsics_error_partial"] <= 1.1 * stats["intrinsics_error_each"]
    whole, st = intrinsics.refine(rec, {}, num_threads=1)
    assert len(whole.cameras) == 12 and "intrinsics_partial_images" not in st


def test_image_errors_are_each_images_median_reprojection_error():
    true = np.full(6, 1280.0)
    rec = _scene(true, true, noise=0.0)
    assert max(intrinsics.image_errors(rec).values()) < 1e-6  # exact projections
    im = rec.images[3]
    im.points2D[0].xy = im.points2D[0].xy + 40.0  # one observation off: the median does not move
    errors = intrinsics.image_errors(rec)
    assert errors[3] < 1e-6
    for p in list(im.points2D)[:200]:
        p.xy = p.xy + [3.0, 4.0]  # most of them 5 px off
    assert intrinsics.image_errors(rec)[3] == pytest.approx(5.0, abs=1e-6)


@pytest.mark.parametrize("conf", [{"final_ba": False, "share": False}, {"share": False}])
def test_off_or_adjustment_only(conf):
    true = np.full(6, 1280.0)
    rec = _scene(true, true * 1.05)
    out, stats = intrinsics.refine(rec, conf, num_threads=1)
    assert len(out.cameras) == 6 and "intrinsics_shared" not in stats
    if conf.get("final_ba", True):
        assert _focal_errors(out, true).max() < 0.01  # adjusted
    else:
        assert out is rec


def test_cameras_with_a_focal_prior_are_never_shared():
    true = np.full(8, 1280.0)
    rec = _scene(true, true)
    for cam in rec.cameras.values():
        cam.has_prior_focal_length = True  # EXIF said so: each image keeps its camera
    assert intrinsics.shareable_groups(rec, 3) == []
    out, stats = intrinsics.refine(rec, {}, num_threads=1)
    assert len(out.cameras) == 8 and "intrinsics_shared" not in stats


def test_a_diverged_adjustment_keeps_the_mapped_model(monkeypatch):
    """An adjustment whose median error explodes (seen once on a rendered model) is not used."""
    true = np.full(6, 1280.0)
    rec = _scene(true, true * 1.05)

    def diverge(r, robust_scale, num_threads=-1):
        for p in r.points3D.values():
            p.xyz = p.xyz + 1e3  # every point thrown far off: errors of hundreds of pixels
        return r

    monkeypatch.setattr(intrinsics, "adjust", diverge)
    out, stats = intrinsics.refine(rec, {}, num_threads=1)
    assert out is rec and stats["intrinsics_diverged"] == 1.0
    assert stats["intrinsics_error_each"] > 100 * stats["intrinsics_error_before"]
