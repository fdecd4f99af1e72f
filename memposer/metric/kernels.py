"""Numeric kernels of the metric's registration, shared by the plain reference and the fast search.

Every kernel works on a batch and gives bit-identical results for one item whatever the batch
size (elementwise arithmetic, explicit sums, per-matrix LAPACK calls): the fast search and the
plain reference share them, so they make the same decisions.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from memposer.geometry import quat_to_R


EPS = np.finfo(np.float64).eps


def horn(src: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Similarity ``dst ~ A src + t`` (``A = s R``) of point triplets by Horn's quaternion method.

    ``src, dst``: (B, k, 3). Scale is the ratio of RMS spreads (as the organisers' code).
    """
    k = src.shape[1]
    mu_s = sum(src[:, i] for i in range(k)) / k
    mu_d = sum(dst[:, i] for i in range(k)) / k
    cs, cd = src - mu_s[:, None], dst - mu_d[:, None]
    S = sum(cs[:, i, :, None] * cd[:, i, None, :] for i in range(k))  # S[a, b] = sum src_a dst_b
    xx, xy, xz = S[:, 0, 0], S[:, 0, 1], S[:, 0, 2]
    yx, yy, yz = S[:, 1, 0], S[:, 1, 1], S[:, 1, 2]
    zx, zy, zz = S[:, 2, 0], S[:, 2, 1], S[:, 2, 2]
    N = np.stack([
        np.stack([xx + yy + zz, yz - zy, zx - xz, xy - yx], -1),
        np.stack([yz - zy, xx - yy - zz, xy + yx, zx + xz], -1),
        np.stack([zx - xz, xy + yx, yy - xx - zz, yz + zy], -1),
        np.stack([xy - yx, zx + xz, yz + zy, zz - xx - yy], -1),
    ], -2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        finite = np.isfinite(N).all((-2, -1))
        N = np.where(finite[:, None, None], N, 0.0)
        w, V = np.linalg.eigh(N)
        q = np.take_along_axis(V, np.argmax(w, -1)[:, None, None], -1)[..., 0]
        R = quat_to_R(q)
        ss = sum((cs[:, i] ** 2).sum(-1) for i in range(k))
        sd = sum((cd[:, i] ** 2).sum(-1) for i in range(k))
        scale = np.sqrt(sd / ss)
        scale = np.where(finite, scale, np.nan)
        A = scale[:, None, None] * R
        t = mu_d - apply(A, mu_s)
    return A, t


def apply(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``A @ x`` for (B, 3, 3) and (B, 3), written out so the rounding never depends on B."""
    return np.stack([A[:, r, 0] * x[:, 0] + A[:, r, 1] * x[:, 1] + A[:, r, 2] * x[:, 2] for r in range(3)], -1)


def _kabsch_t(s: np.ndarray, d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation (SVD) with RMS-ratio scale for point sets (K, 3, k), k >= 3,
    given coordinate-major and C-contiguous (sums run along the last axis)."""
    K, _, k = s.shape
    mu_s, mu_d = s.sum(-1) / k, d.sum(-1) / k
    cs, cd = s - mu_s[..., None], d - mu_d[..., None]
    C = (cd[:, :, None, :] * cs[:, None, :, :]).sum(-1)  # C[a, b] = sum dst_a src_b
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        finite = np.isfinite(C).all((-2, -1))
        U, _, Vt = np.linalg.svd(np.where(finite[:, None, None], C, 0.0))
        R = _matmul3(U, Vt)
        flip = _det3(R) < 0
        U[flip, :, 2] *= -1.0
        R = np.where(flip[:, None, None], _matmul3(U, Vt), R)
        scale = np.sqrt((cd * cd).reshape(K, -1).sum(-1) / (cs * cs).reshape(K, -1).sum(-1))
        A = np.where(finite, scale, np.nan)[:, None, None] * R
        t = mu_d - apply(A, mu_s)
    return A, t


def _matmul3(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return P[..., :, 0, None] * Q[..., None, 0, :] + P[..., :, 1, None] * Q[..., None, 1, :] + P[..., :, 2, None] * Q[..., None, 2, :]


def _det3(M: np.ndarray) -> np.ndarray:
    return (M[:, 0, 0] * (M[:, 1, 1] * M[:, 2, 2] - M[:, 1, 2] * M[:, 2, 1])
            - M[:, 0, 1] * (M[:, 1, 0] * M[:, 2, 2] - M[:, 1, 2] * M[:, 2, 0])
            + M[:, 0, 2] * (M[:, 1, 0] * M[:, 2, 1] - M[:, 1, 1] * M[:, 2, 0]))


def sq_err(A: np.ndarray, t: np.ndarray, X: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Squared distances ``|A x_j + t - g_j|^2``: (B, 3, 3), (B, 3), (n, 3), (n, 3) -> (B, n)."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = 0.0
        for r in range(3):
            p = A[:, r, 0, None] * X[None, :, 0] + A[:, r, 1, None] * X[None, :, 1] + A[:, r, 2, None] * X[None, :, 2] + t[:, r, None]
            d = p - G[None, :, r]
            e = e + d * d
    return e


def sq_err_pairs(A, t, X, G, bi: np.ndarray, ji: np.ndarray) -> np.ndarray:
    """:func:`sq_err` at selected (model, camera) pairs; same operations, same rounding."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = 0.0
        for r in range(3):
            p = A[bi, r, 0] * X[ji, 0] + A[bi, r, 1] * X[ji, 1] + A[bi, r, 2] * X[ji, 2] + t[bi, r]
            d = p - G[ji, r]
            e = e + d * d
    return e


def fit(masks: np.ndarray, X: np.ndarray, G: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One least-squares similarity per inlier mask (K, n), batched by inlier count."""
    K = len(masks)
    A, t = np.empty((K, 3, 3)), np.empty((K, 3))
    counts = masks.sum(1)
    order = np.argsort(counts, kind="stable")
    cols = np.flatnonzero(masks[order]) % masks.shape[1]  # inlier indices, row after row in ``order``
    ks, sizes = np.unique(counts[order], return_counts=True)
    XT, GT = np.ascontiguousarray(X.T), np.ascontiguousarray(G.T)  # 1-D gathers are much faster
    row = off = 0
    for k, m in zip(ks.tolist(), sizes.tolist()):
        rows = order[row:row + m]
        idx = cols[off:off + m * k].reshape(m, k)
        src, dst = np.empty((m, 3, k)), np.empty((m, 3, k))  # coordinate-major, as _kabsch_t wants
        for a in range(3):  # mode="clip" (indices are valid) lets take write straight into the views
            np.take(XT[a], idx, out=src[:, a], mode="clip")
            np.take(GT[a], idx, out=dst[:, a], mode="clip")
        A[rows], t[rows] = _kabsch_t(src, dst)
        row, off = row + m, off + m * k
    return A, t


def refine(masks: np.ndarray, X: np.ndarray, G: np.ndarray, th2: np.ndarray):
    """Refined models of inlier masks (K, n): A, t, squared errors (K, n), inlier counts (K, r), error sums."""
    A, t = fit(masks, X, G)
    err = sq_err(A, t, X, G)
    with np.errstate(invalid="ignore"):
        n_inl = (err[:, :, None] < th2).sum(1)
    return A, t, err, n_inl, err.sum(-1)
