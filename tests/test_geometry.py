import numpy as np
import pytest
import torch

from memposer import geometry as G


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_center_and_inverse_roundtrip(rng):
    R = G.random_rotation(rng, 5)
    t = rng.normal(size=(5, 3))
    c = G.camera_center(R, t)
    # The camera centre maps to the camera origin.
    np.testing.assert_allclose(np.einsum("nij,nj->ni", R, c) + t, 0, atol=1e-12)
    Rc, c2 = G.w2c_to_c2w(R, t)
    R2, t2 = G.c2w_to_w2c(Rc, c2)
    np.testing.assert_allclose(R2, R, atol=1e-12)
    np.testing.assert_allclose(t2, t, atol=1e-12)


def test_quaternion_roundtrip_and_torch_agrees(rng):
    R = G.random_rotation(rng, 50)
    q = G.R_to_quat(R)
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(G.quat_to_R(q), R, atol=1e-10)
    Rt = G.quat_to_R(torch.as_tensor(q))
    np.testing.assert_allclose(Rt.numpy(), R, atol=1e-10)
    np.testing.assert_allclose(G.R_to_quat(torch.as_tensor(R)).numpy(), q, atol=1e-10)
    # 90 degrees about z: (cos45, 0, 0, sin45)
    Rz = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    np.testing.assert_allclose(G.R_to_quat(Rz), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)


def test_rot6d_roundtrip_and_orthonormal(rng):
    R = G.random_rotation(rng, 20)
    np.testing.assert_allclose(G.rot6d_to_R(G.R_to_rot6d(R)), R, atol=1e-12)
    raw = torch.randn(20, 6, dtype=torch.float64)
    Rr = G.rot6d_to_R(raw)
    eye = torch.eye(3, dtype=torch.float64).expand(20, 3, 3)
    torch.testing.assert_close(Rr @ Rr.transpose(-1, -2), eye)
    assert torch.allclose(torch.linalg.det(Rr), torch.ones(20, dtype=torch.float64))


def test_relative_pose_and_angles(rng):
    R1, R2 = G.random_rotation(rng, 2)
    t1, t2 = rng.normal(size=(2, 3))
    R12, t12 = G.relative_pose(R1, t1, R2, t2)
    x = rng.normal(size=3)
    np.testing.assert_allclose(R12 @ (R1 @ x + t1) + t12, R2 @ x + t2, atol=1e-12)
    Rz = G.quat_to_R(np.array([np.cos(np.pi / 8), 0, 0, np.sin(np.pi / 8)]))  # 45 degrees
    assert G.rotation_angle(Rz) == pytest.approx(45.0)
    assert G.rotation_error(Rz @ R1, R1) == pytest.approx(45.0)
    assert G.vector_angle(np.array([1.0, 0, 0]), np.array([1.0, 1.0, 0])) == pytest.approx(45.0)


def test_similarity_keeps_centres_consistent(rng):
    R = G.random_rotation(rng, 4)
    t = rng.normal(size=(4, 3))
    s, Rs, ts = 2.5, G.random_rotation(rng), rng.normal(size=3)
    R2, t2 = G.apply_similarity(R, t, s, Rs, ts)
    c, c2 = G.camera_center(R, t), G.camera_center(R2, t2)
    np.testing.assert_allclose(c2, s * c @ Rs.T + ts, atol=1e-10)
    s_est, R_est, t_est = G.umeyama(c, c2)
    assert s_est == pytest.approx(s)
    np.testing.assert_allclose(R_est, Rs, atol=1e-8)
    np.testing.assert_allclose(t_est, ts, atol=1e-8)


def test_look_at_points_camera_at_target():
    R, t = G.look_at(np.array([3.0, 0, 1]), np.zeros(3))
    np.testing.assert_allclose(G.camera_center(R, t), [3, 0, 1], atol=1e-12)
    p = R @ np.zeros(3) + t
    assert p[2] > 0 and abs(p[0]) < 1e-12 and abs(p[1]) < 1e-12
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_roll_matrix_is_a_rotation_about_z_for_one_angle_or_many():
    from memposer.geometry import roll_matrix
    a = np.array([0.0, 0.3, np.pi / 2, -2.0])
    R = roll_matrix(a)
    assert R.shape == (4, 3, 3) and np.allclose(R, np.stack([roll_matrix(x) for x in a]))
    assert np.allclose(R @ R.transpose(0, 2, 1), np.eye(3)) and np.allclose(np.linalg.det(R), 1)
    assert np.allclose(roll_matrix(np.pi / 2) @ [1.0, 0, 0], [0, 1, 0]) and np.allclose(R[:, 2], [0, 0, 1])
