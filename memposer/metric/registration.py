"""What a registration finds (one best model per threshold), the organisers' best-model update
rule, and the similarity a model stands for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from memposer.geometry import apply_similarity


@dataclass
class Registration:
    """Best alignment of predicted onto true camera centres, one model per threshold.

    Arrays over the ``n`` input cameras; ``r`` thresholds. ``A`` (r, 3, 3) and ``t`` (r, 3) map a
    predicted centre ``x`` to ``A @ x + t`` (``A = s R``); NaN where no model was found.
    """

    valid: np.ndarray        # (n,) finite predicted centre
    err: np.ndarray          # (n, r) distance after alignment; inf when invalid or no model
    n_inliers: np.ndarray    # (r,) inliers of the best model (err^2 < th^2)
    A: np.ndarray            # (r, 3, 3)
    t: np.ndarray            # (r, 3)
    triplet: np.ndarray      # (r, 3) cameras of the minimal model behind the best model, -1 if none
    fit: np.ndarray          # (n, r) cameras the best model was fitted on

    def alignment(self, q: int) -> Optional["Alignment"]:
        """The best model of threshold ``q`` as an :class:`Alignment` (None where none was found)."""
        return _alignment(self, q)


class State:
    """The running best model per threshold, with the organisers' update rule."""

    def __init__(self, n: int, r: int):
        self.n_inl = np.zeros(r)
        self.err_sum = np.full(r, np.inf)
        self.model = np.full(r, -1)
        self.strict_all = np.zeros(n, bool)  # strict inlier for every threshold
        self.strict = np.zeros((n, r), bool)
        self.triplet = np.full((r, 3), -1)
        self.err = np.full((n, r), np.inf)

    def better(self, n_inl: np.ndarray, err_sum) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (n_inl > self.n_inl) | ((n_inl == self.n_inl) & (np.asarray(err_sum)[..., None] < self.err_sum))

    def update(self, upd, model_id, n_inl, err_sum, sq_err, triplet, th, strict_cf):
        self.n_inl[upd] = n_inl[upd]
        self.err_sum[upd] = err_sum
        self.model[upd] = model_id
        self.triplet[upd] = triplet
        d = np.sqrt(sq_err)
        self.err[:, upd] = d[:, None]
        with np.errstate(invalid="ignore"):
            self.strict[:, upd] = d[:, None] < strict_cf * th[upd]
        self.strict_all = self.strict.all(1)


def finish(valid, X, G, th, state: State, models: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Registration:
    n_all, r = len(valid), len(th)
    err = np.full((n_all, r), np.inf)
    err[valid] = state.err
    A, t = np.full((r, 3, 3), np.nan), np.full((r, 3), np.nan)
    fit = np.zeros((n_all, r), bool)
    idx = np.nonzero(valid)[0]
    for q, m in enumerate(state.model):
        if m >= 0:
            A[q], t[q], mask = models[m]
            fit[idx[mask], q] = True
    triplet = np.where(state.triplet >= 0, np.append(idx, -1)[state.triplet], -1)
    return Registration(valid, err, state.n_inl.astype(int), A, t, triplet, fit)


@dataclass
class Alignment:
    """Similarity ``x_gt = s R x_pred + t`` found by the metric (its best model at the largest threshold)."""

    s: float
    R: np.ndarray
    t: np.ndarray

    def points(self, x: np.ndarray) -> np.ndarray:
        return self.s * x @ self.R.T + self.t

    def poses(self, R: np.ndarray, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """World-to-camera poses re-expressed in the ground-truth frame."""
        return apply_similarity(R, t, self.s, self.R, self.t)


def _alignment(reg: Registration, q: int) -> Optional[Alignment]:
    A, t = reg.A[q], reg.t[q]
    if not np.isfinite(A).all():
        return None
    s = float(np.cbrt(np.linalg.det(A)))
    return Alignment(s, A / s, t.copy())
