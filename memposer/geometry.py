"""Pose conventions and conversions: the one place that owns them.

Convention (as IMC2025 and COLMAP): a pose is **world-to-camera**, ``x_cam = R @ x_world + t``,
camera axes OpenCV (x right, y down, z forward). The camera centre is ``c = -R^T t`` and the
camera-to-world pose is ``(R^T, c)``. Quaternions are ``(w, x, y, z)``. The 6D rotation encoding
(Zhou et al. 2019) is the first two *columns* of ``R`` concatenated: ``(r11, r21, r31, r12, r22, r32)``.

Every function accepts numpy arrays or torch tensors with arbitrary leading batch dimensions and
returns the same type.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Tuple, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def _is_torch(x) -> bool:
    # torch is not imported here: a tensor exists only where it already is, and the numpy-only
    # users (the mapping worker processes) would pay ~2 s of start-up each for it
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _transpose(R: Array) -> Array:
    return R.transpose(-1, -2) if _is_torch(R) else np.swapaxes(R, -1, -2)


def _matvec(R: Array, v: Array) -> Array:
    return (R @ v[..., None])[..., 0]


def camera_center(R: Array, t: Array) -> Array:
    """Camera centre in world coordinates of a world-to-camera pose: ``-R^T t``."""
    return -_matvec(_transpose(R), t)


def w2c_to_c2w(R: Array, t: Array) -> Tuple[Array, Array]:
    """World-to-camera ``(R, t)`` -> camera-to-world ``(R^T, c)``."""
    return _transpose(R), camera_center(R, t)


def c2w_to_w2c(R_c2w: Array, c: Array) -> Tuple[Array, Array]:
    """Camera-to-world ``(R_c2w, c)`` -> world-to-camera ``(R_c2w^T, -R_c2w^T c)``."""
    R = _transpose(R_c2w)
    return R, -_matvec(R, c)


def t_from_center(R: Array, c: Array) -> Array:
    """Translation of a world-to-camera pose whose camera sits at ``c``: ``-R c``."""
    return -_matvec(R, c)


def relative_pose(R1: Array, t1: Array, R2: Array, t2: Array) -> Tuple[Array, Array]:
    """Pose of camera 2 relative to camera 1: maps camera-1 coordinates to camera-2 coordinates."""
    R12 = R2 @ _transpose(R1)
    return R12, t2 - _matvec(R12, t1)


def apply_similarity(R: Array, t: Array, s: float, Rs: Array, ts: Array) -> Tuple[Array, Array]:
    """Re-express world-to-camera poses after the world moves by ``x' = s Rs x + ts``."""
    R_new = R @ _transpose(Rs)
    t_new = s * t - _matvec(R_new, ts)
    return R_new, t_new


def rotation_angle(R: Array, degrees: bool = True) -> Array:
    """Angle of rotation matrices (geodesic distance to the identity)."""
    # atan2(sin, cos) rather than acos(cos): acos loses half the digits near 0 (float32 noise of
    # 1e-7 in the trace reads as 0.03 degrees), the skew part keeps small angles exact
    skew = lambda a, b, c, d: R[..., a, b] - R[..., c, d]
    sin2 = [skew(2, 1, 1, 2), skew(0, 2, 2, 0), skew(1, 0, 0, 1)]
    if _is_torch(R):
        import torch  # noqa: PLC0415  (imported already: the argument is a tensor)
        cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
        ang = torch.atan2(torch.stack(sin2, -1).norm(dim=-1) / 2, cos)
        return torch.rad2deg(ang) if degrees else ang
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1) / 2
    ang = np.arctan2(np.linalg.norm(np.stack(sin2, -1), axis=-1) / 2, cos)
    return np.degrees(ang) if degrees else ang


def rotation_error(R1: Array, R2: Array, degrees: bool = True) -> Array:
    """Geodesic angle between two rotations."""
    return rotation_angle(R1 @ _transpose(R2), degrees)


def vector_angle(a: Array, b: Array, degrees: bool = True, eps: float = 1e-9) -> Array:
    """Angle between vectors (e.g. translation directions)."""
    if _is_torch(a):
        import torch  # noqa: PLC0415  (imported already: the argument is a tensor)
        cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)
        ang = torch.acos(cos.clamp(-1.0, 1.0))
        return torch.rad2deg(ang) if degrees else ang
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), eps)
    ang = np.arccos(np.clip(cos, -1.0, 1.0))
    return np.degrees(ang) if degrees else ang


def quat_to_R(q: Array) -> Array:
    """Unit quaternion ``(w, x, y, z)`` (normalised here) -> rotation matrix."""
    if _is_torch(q):
        import torch  # noqa: PLC0415  (imported already: the argument is a tensor)
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        w, x, y, z = q.unbind(-1)
        stack = lambda rows: torch.stack([torch.stack(r, -1) for r in rows], -2)  # noqa: E731
    else:
        q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        w, x, y, z = np.moveaxis(q, -1, 0)
        stack = lambda rows: np.stack([np.stack(r, -1) for r in rows], -2)  # noqa: E731
    return stack([
        (1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
        (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
        (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)),
    ])


def R_to_quat(R: Array) -> Array:
    """Rotation matrix -> unit quaternion ``(w, x, y, z)`` with ``w >= 0``."""
    as_torch = _is_torch(R)
    Rn = R.detach().cpu().double().numpy() if as_torch else np.asarray(R, dtype=np.float64)
    m = Rn.reshape(-1, 3, 3)
    q = np.empty((len(m), 4))
    for i, M in enumerate(m):
        # Largest-pivot branch keeps the square root well away from zero.
        tr = np.trace(M)
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            q[i] = (0.25 * s, (M[2, 1] - M[1, 2]) / s, (M[0, 2] - M[2, 0]) / s, (M[1, 0] - M[0, 1]) / s)
        else:
            k = int(np.argmax(np.diag(M)))
            a, b = (k + 1) % 3, (k + 2) % 3
            s = 2.0 * np.sqrt(1.0 + M[k, k] - M[a, a] - M[b, b])
            v = np.empty(3)
            v[k] = 0.25 * s
            v[a] = (M[a, k] + M[k, a]) / s
            v[b] = (M[b, k] + M[k, b]) / s
            q[i] = ((M[b, a] - M[a, b]) / s, *v)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q = q.reshape(Rn.shape[:-2] + (4,))
    return sys.modules["torch"].as_tensor(q, dtype=R.dtype, device=R.device) if as_torch else q


def rot6d_to_R(d6: Array) -> Array:
    """6D encoding -> rotation matrix by Gram-Schmidt; columns of R are (b1, b2, b1 x b2)."""
    a1, a2 = d6[..., 0:3], d6[..., 3:6]
    if _is_torch(d6):
        import torch  # noqa: PLC0415  (imported already: the argument is a tensor)
        b1 = torch.nn.functional.normalize(a1, dim=-1)
        b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
        return torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-1)
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def R_to_rot6d(R: Array) -> Array:
    """Rotation matrix -> 6D encoding (first two columns)."""
    if _is_torch(R):
        import torch  # noqa: PLC0415  (imported already: the argument is a tensor)
        return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def random_rotation(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    """Uniformly distributed random rotation(s)."""
    q = rng.normal(size=(1 if n is None else n, 4))
    R = quat_to_R(q)
    return R[0] if n is None else R


def roll_matrix(angle) -> np.ndarray:
    """Rotation by ``angle`` radians about the optical (z) axis: (3,3), or (N,3,3) for N angles.
    On the left of a world-to-camera rotation it rolls the camera; its 2x2 block turns the normalised
    keypoints the same way."""
    a = np.asarray(angle, np.float64)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> Tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``(R, t)`` of an OpenCV camera at ``center`` looking at ``target``."""
    z = target - center
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-8:  # looking along `up`: any perpendicular will do
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=0)
    return R, t_from_center(R, center)


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` between point sets (N, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var) if with_scale and var > 0 else 1.0
    return s, R, mu_d - s * R @ mu_s
