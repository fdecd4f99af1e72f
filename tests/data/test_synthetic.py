"""The synthetic competition generator: layout, determinism, and exact geometry."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from memposer.data.imc import OUTLIER_SCENE, read_labels, read_thresholds
from memposer.data.synthetic.competition import _rng, generate_competition
from memposer.data.synthetic.generate import load_conf, random_scene_spec, render_scene


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate_competition(tmp_path_factory.mktemp("syn") / "a", "tiny", seed=7, progress=False)


def test_layout_labels_and_sample_submission(tiny):
    conf = load_conf("tiny")
    for split in ("train", "test"):
        labels = read_labels(tiny / f"{split}_labels.csv")
        thresholds = read_thresholds(tiny / f"{split}_thresholds.csv")
        files = {(p.parent.name, p.name) for p in (tiny / split).glob("*/*.png")}
        assert files == {(r.dataset, r.image) for r in labels}
        scenes = {r.scene for r in labels if r.scene != OUTLIER_SCENE}
        assert len(scenes) == conf["scenes_per_dataset"][0]
        assert sum(r.scene == OUTLIER_SCENE for r in labels) == conf["outliers_per_dataset"][0]
        for ds, per_scene in thresholds.items():
            assert set(per_scene) == {r.scene for r in labels if r.dataset == ds and r.scene != OUTLIER_SCENE}
        for r in labels:
            if r.scene == OUTLIER_SCENE:
                assert r.R is None or np.isnan(r.R).all()
            else:  # proper rotations
                assert np.allclose(r.R @ r.R.T, np.eye(3), atol=1e-9) and abs(np.linalg.det(r.R) - 1) < 1e-9
    sample = (tiny / "sample_submission.csv").read_text().splitlines()
    assert len(sample) - 1 == len(read_labels(tiny / "test_labels.csv"))
    assert all(",nan" in line for line in sample[1:])  # the answers are not in the sample


def test_same_seed_same_files_with_any_workers(tiny, tmp_path):
    again = generate_competition(tmp_path / "b", "tiny", seed=7, progress=False, workers=3)
    assert _digest(again) == _digest(tiny)
    other = generate_competition(tmp_path / "c", "tiny", seed=8, progress=False, split="test")
    assert _digest(other / "test") != _digest(tiny / "test")


def test_refuses_to_overwrite_without_flag(tiny):
    with pytest.raises(FileExistsError):
        generate_competition(tiny, "tiny", seed=7, progress=False)


def _reprojected_depth_error(K, R, t, depth, i: int, j: int) -> np.ndarray:
    """Relative depth error of view i's pixels lifted by its depth and pose, projected into view j."""
    h, w = depth.shape[1:]
    ys, xs = np.mgrid[4:h - 4:6, 4:w - 4:6].reshape(2, -1)
    z = depth[i, ys, xs]
    keep = np.isfinite(z)
    pix = np.stack([xs[keep] + 0.5, ys[keep] + 0.5, np.ones(keep.sum())])  # pixel centres
    X = R[i].T @ (np.linalg.inv(K[i]) @ pix * z[keep] - t[i][:, None])
    Y = R[j] @ X + t[j][:, None]
    Y = Y[:, Y[2] > 1e-3]
    uv = (K[j] @ Y)[:2] / Y[2]
    inside = (uv[0] >= 0) & (uv[0] < w) & (uv[1] >= 0) & (uv[1] < h)
    u, v = np.floor(uv[:, inside]).astype(int)
    zj, expected = depth[j, v, u], Y[2, inside]
    ok = np.isfinite(zj)
    return np.abs(zj[ok] - expected[ok]) / expected[ok]


def test_poses_intrinsics_and_depth_agree():
    """A pixel lifted with view i's depth and pose lands in view j where view j renders that depth."""
    conf = load_conf("tiny")
    rng = _rng(2, 0)
    res = render_scene(random_scene_spec(conf, rng, n_images=3), rng, conf, return_depth=True)
    K, R, t, depth = res["K"], res["R"], res["t"], res["depth"]
    err = np.concatenate([_reprojected_depth_error(K, R, t, depth, i, j) for i, j in ((0, 1), (1, 2), (0, 2))])
    assert err.size > 300
    # Occluded points disagree; the visible majority agrees to a fraction of a percent.
    assert np.median(err) < 0.005 and (err < 0.02).mean() > 0.8
    t_bad = t.copy()
    t_bad[1] += 0.05 * res["extent"] * np.array([1.0, 0.0, 0.0])  # a wrong pose must be caught
    assert np.median(_reprojected_depth_error(K, R, t_bad, depth, 0, 1)) > 0.005
