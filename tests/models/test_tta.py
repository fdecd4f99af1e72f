"""Test-time roll augmentation: the score tells true poses from wrong ones; the rolls are undone exactly."""
import numpy as np
import torch

from memposer.data.tracks import sample_scene
from memposer.geometry import roll_matrix
from memposer.models.tta import epipolar_score, predict_rolled

CLEAN = {"noise_px": [0.0, 0.0], "outliers": [0.0, 0.0], "exif": 1.0, "exif_noise": 0.0, "cameras": [8, 8]}


def _scene(seed=0):
    s = sample_scene(np.random.default_rng(seed), CLEAN)
    return s["obs"].astype(np.float32), s["vis"], s["R"].astype(float), s["t"].astype(float)


def test_epipolar_score_is_zero_for_true_poses_and_large_for_wrong_ones():
    obs, vis, R, t = _scene()
    assert epipolar_score(R, t, obs, vis) < 1e-5
    rng = np.random.default_rng(1)
    Rw = np.stack([roll_matrix(a) for a in rng.uniform(0.2, 1.0, len(R))]) @ R  # every camera rolled a bit
    assert epipolar_score(Rw, t, obs, vis) > 1e-2
    # gauge-free: one similarity of the world changes nothing
    G = roll_matrix(0.7)[[2, 0, 1]]
    assert abs(epipolar_score(R @ G.T, 3.0 * t, obs, vis)) < 1e-5


class _Oracle:
    """Answers with the true poses only when the scene comes rolled by ``good`` quarter turns; the
    identity otherwise. Poses are answered in the rolled cameras' frames, as a network would."""

    def __init__(self, R, t, obs, good):
        self.R, self.t, self.obs, self.good, self.conf = R, t, obs, good, {}

    def predict(self, obs, vis, exif=None):
        n = len(self.R)
        for k in range(4):
            Rz = roll_matrix(np.pi / 2 * k)
            if np.allclose(obs.numpy(), (self.obs @ Rz[:2, :2].T) * vis.numpy()[..., None], atol=1e-5):
                if k == self.good:
                    R, t = Rz @ self.R, self.t @ Rz.T
                    return {"R": torch.from_numpy(R).float(), "t": torch.from_numpy(t).float(), "conf": torch.ones(n)}
        return {"R": torch.eye(3).repeat(n, 1, 1), "t": torch.zeros(n, 3), "conf": torch.ones(n)}


def test_predict_rolled_keeps_the_roll_whose_answer_fits_and_turns_it_back():
    obs, vis, R, t = _scene(2)
    out = predict_rolled(_Oracle(R, t, obs, good=3), torch.from_numpy(obs), torch.from_numpy(vis))
    assert float(out["roll_deg"]) == 270.0
    assert np.allclose(out["R"].numpy(), R, atol=1e-5) and np.allclose(out["t"].numpy(), t, atol=1e-5)
    assert int(torch.argmin(out["scores"])) == 3
    plain = predict_rolled(_Oracle(R, t, obs, good=0), torch.from_numpy(obs), torch.from_numpy(vis), rolls=1)
    assert float(plain["roll_deg"]) == 0.0 and np.allclose(plain["R"].numpy(), R, atol=1e-5)


def test_turns_bring_turned_views_to_one_orientation_and_back():
    """Views shot turned (as the upright stage finds them) reach the network in one orientation; its
    answer comes back in the shot cameras' frames."""
    obs, vis, R, t = _scene(3)
    turns = np.array([0, 2, 1, 0, 3, 2, 0, 1])[: len(R)]
    Rz = np.stack([roll_matrix(np.pi / 2 * k) for k in turns])  # a turn maps (x, y) -> (y, -x): undo it
    shot_obs = (np.einsum("nij,npj->npi", Rz[:, :2, :2], obs.astype(float)) * vis[..., None]).astype(np.float32)
    shot_R, shot_t = Rz @ R, np.einsum("nij,nj->ni", Rz, t)
    oracle = _Oracle(R, t, obs, good=0)
    out = predict_rolled(oracle, torch.from_numpy(shot_obs), torch.from_numpy(vis), rolls=1, turns=turns)
    assert np.allclose(out["R"].numpy(), shot_R, atol=1e-5) and np.allclose(out["t"].numpy(), shot_t, atol=1e-5)
    assert epipolar_score(shot_R, shot_t, shot_obs, vis) < 1e-5  # the shot scene is the same geometry
