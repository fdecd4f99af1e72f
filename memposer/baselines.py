"""Geometry-free and classical pose baselines that MemPoser is measured against.

- ``identity_poses``: every camera at the origin with the identity rotation;
- ``random_poses``: uniformly random rotations and centres (an uninformative seed);
- ``rotation_averaging``: the classical chain: a relative rotation per image pair from its common
  tracks (essential matrix, RANSAC), then chordal rotation averaging (spectral start, then
  iteratively reweighted least squares that down-weights pairs that disagree).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from memposer.geometry import random_rotation, rotation_error, t_from_center


def identity_poses(n: int) -> Tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.eye(3)[None], n, 0), np.zeros((n, 3))


def random_poses(n: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    R = random_rotation(rng, n).reshape(n, 3, 3)
    return R, t_from_center(R, rng.normal(size=(n, 3)))


def pair_rotations(obs: np.ndarray, vis: np.ndarray, min_common: int = 12, threshold: float = 2e-3,
                   seed: int = 0) -> List[Tuple[int, int, np.ndarray, int]]:
    """``(i, j, R_ij, inliers)`` for pairs with enough common tracks; ``R_ij`` maps camera i to j.

    obs are normalised points (focal 1), so ``threshold`` is in those units (2e-3 ~ 2 px at f=1000).
    """
    cv2.setRNGSeed(seed)
    out = []
    n = len(obs)
    for i in range(n):
        for j in range(i + 1, n):
            common = vis[i] & vis[j]
            if common.sum() < min_common:
                continue
            p1, p2 = obs[i, common].astype(np.float64), obs[j, common].astype(np.float64)
            try:
                E, inl = cv2.findEssentialMat(p1, p2, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=threshold)
            except cv2.error:  # OpenCV's five-point solver asserts on some exact, noise-free samples
                continue
            if E is None or E.shape != (3, 3):
                continue
            n_inl, R, _, _ = cv2.recoverPose(E, p1, p2, np.eye(3), mask=inl)
            if n_inl >= min_common // 2:
                out.append((i, j, R, int(n_inl)))
    return out


def rotation_averaging(n: int, pairs: List[Tuple[int, int, np.ndarray, int]], iterations: int = 10,
                       huber_deg: float = 5.0) -> Tuple[np.ndarray, np.ndarray]:
    """World-to-camera rotations (n,3,3) from relative ones, and a mask of images the pairs reach.

    Images outside the largest connected part of the pair graph get the identity and ``False``.
    """
    reached = _largest_component(n, pairs)
    R = np.repeat(np.eye(3)[None], n, 0)
    if reached.sum() < 2:
        return R, reached
    idx = -np.ones(n, int)
    idx[reached] = np.arange(reached.sum())
    edges = [(idx[i], idx[j], Rij, w) for i, j, Rij, w in pairs if reached[i] and reached[j]]
    m = int(reached.sum())
    weights = np.array([float(w) for *_, w in edges])
    Rm = _spectral(m, edges, weights)
    for _ in range(iterations):
        # residual of R_b = R_ab R_a, in degrees
        res = rotation_error(np.stack([Rij for *_, Rij, _ in edges]) @ Rm[[a for a, *_ in edges]],
                             Rm[[b for _, b, *_ in edges]])
        robust = np.where(res < huber_deg, 1.0, huber_deg / np.maximum(res, 1e-9))
        Rm = _spectral(m, edges, weights * robust)
    R[reached] = Rm
    return R, reached


def _spectral(m: int, edges, weights: np.ndarray) -> np.ndarray:
    """Chordal least squares by the eigenvectors of the block matrix whose (a, b) block is R_ab^T.

    With V the stacked world-to-camera rotations, V V^T has exactly those blocks (X_a X_b^T), so the
    top three eigenvectors give V up to a common 3x3 orthogonal matrix: the gauge (and a reflection,
    undone by flipping one axis for every block at once).
    """
    M = np.zeros((3 * m, 3 * m))
    for (a, b, Rab, _), w in zip(edges, weights):
        M[3 * a:3 * a + 3, 3 * b:3 * b + 3] += w * Rab.T
        M[3 * b:3 * b + 3, 3 * a:3 * a + 3] += w * Rab
    _, vecs = np.linalg.eigh(M)
    V = vecs[:, -3:].reshape(m, 3, 3)
    if np.mean(np.linalg.det(V)) < 0:
        V = V @ np.diag([1.0, 1.0, -1.0])
    return np.stack([_svd_proj(v) for v in V])


def _svd_proj(A: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(A)
    R = U @ Vt
    if np.linalg.det(R) < 0:
        R = U @ np.diag([1, 1, -1]) @ Vt
    return R


def _largest_component(n: int, pairs) -> np.ndarray:
    """Mask of the images in the largest connected part of the pair graph (none without pairs)."""
    if not pairs:
        return np.zeros(n, bool)
    i, j = np.array([(p[0], p[1]) for p in pairs]).T
    _, label = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    return label == np.bincount(label).argmax()


def rotation_averaging_poses(obs: np.ndarray, vis: np.ndarray, seed: int = 0,
                             pairs: Optional[list] = None) -> Dict[str, np.ndarray]:
    """The classical chain on one scene's tracks: ``{"R": (N,3,3), "reached": (N,)}``."""
    pairs = pair_rotations(obs, vis, seed=seed) if pairs is None else pairs
    R, reached = rotation_averaging(len(obs), pairs)
    return {"R": R, "reached": reached}
