"""Inlier screening of many alignment models at once: a GEMM gives squared errors up to a proven
bound, and only entries within that bound of a threshold go to the exact kernel."""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .kernels import EPS, apply, sq_err_pairs


class Screen:
    """Inlier masks of many models at once: a GEMM gives the squared errors up to a proven bound;
    only entries within that bound of a threshold are recomputed with :func:`sq_err`."""

    def __init__(self, X: np.ndarray, G: np.ndarray, th2: np.ndarray):
        self.X, self.G, self.th2s = X, G, np.sort(th2)
        gfin = np.isfinite(G).all(1)
        self.cx = X.mean(0)
        self.cg = G[gfin].mean(0) if gfin.any() else np.zeros(3)
        x, g = X - self.cx, np.where(gfin[:, None], G - self.cg, np.nan)
        self.F = np.concatenate([
            x ** 2, x[:, [0, 0, 1]] * x[:, [1, 2, 2]], x, (g[:, :, None] * x[:, None, :]).reshape(-1, 9),
            g, np.ones((len(x), 1)), (g ** 2).sum(1, keepdims=True)], 1).T.copy()  # (23, n)
        self.xmax_c = np.linalg.norm(x, axis=1).max()
        self.gmax_c = np.nanmax(np.linalg.norm(g, axis=1)) if gfin.any() else 0.0
        self.xmax = np.linalg.norm(X, axis=1).max()
        self.gmax = np.linalg.norm(G[gfin], axis=1).max() if gfin.any() else 0.0

    def levels(self, A: np.ndarray, t: np.ndarray, rank: np.ndarray, block: int = 2048):
        """Levels, inlier counts and error-sum lower bounds of (B,) models.

        Levels (B, n): number of thresholds each camera fails (``err^2 >= th^2``), exactly as
        :func:`sq_err` would give; camera j is an inlier at sorted threshold q iff level <= q.
        Counts (B, r): inliers per threshold, thresholds in their given order (``rank``: position of
        each once sorted). Bounds (B,): lower bounds on ``sq_err(A, t, X, G).sum(-1)`` (see
        :meth:`_sum_lower_bound`), -inf for non-finite models. Works in blocks of ``block`` models
        so that the (block, n) temporaries stay in cache."""
        n = self.F.shape[1]
        L, counts, lb = np.empty((len(A), n), np.int8), np.empty((len(A), len(rank)), int), np.empty(len(A))
        for s in range(0, len(A), block):
            L[s:s + block], counts[s:s + block], lb[s:s + block] = self._levels(A[s:s + block], t[s:s + block])
        return L, counts[:, rank], lb

    def _levels(self, A: np.ndarray, t: np.ndarray):
        """Levels, inlier counts (sorted thresholds) and sum lower bounds of one block of models."""
        B, n, th2 = len(A), self.F.shape[1], self.th2s
        out = np.full((B, n), len(th2), np.int8)
        counts = np.zeros((B, len(th2)), int)
        lb = np.full(B, -np.inf)
        fin = np.isfinite(A).all((1, 2)) & np.isfinite(t).all(1)
        # a non-finite model gives non-finite errors everywhere: no inliers
        A, t, rows = A[fin], t[fin], np.nonzero(fin)[0]
        if not len(rows):
            return out, counts, lb
        tc = t + apply(A, np.broadcast_to(self.cx, t.shape)) - self.cg
        P = np.einsum("bki,bkj->bij", A, A)
        Atc = np.einsum("bki,bk->bi", A, tc)
        coef = np.concatenate([
            P[:, [0, 1, 2], [0, 1, 2]], 2 * P[:, [0, 0, 1], [1, 2, 2]], 2 * Atc, -2 * A.reshape(-1, 9),
            -2 * tc, (tc ** 2).sum(1, keepdims=True), np.ones((len(A), 1))], 1)
        E = _rowwise_gemm(coef, self.F)
        # error bound: GEMM rounding on centred data + rounding of the exact kernel on raw data
        nA = np.linalg.norm(A.reshape(-1, 9), axis=1)
        mag_c = nA * self.xmax_c + np.linalg.norm(tc, axis=1) + self.gmax_c
        delta = 64 * EPS * (nA * self.xmax + np.linalg.norm(t, axis=1) + self.gmax)
        SE = E.sum(1)  # non-finite iff the row has a NaN or inf entry (or overflows: harmless)
        lb[rows] = self._sum_lower_bound(SE, n, 1e3 * EPS * mag_c ** 2, delta)
        th = np.sqrt(th2)
        tol = 1e3 * EPS * mag_c[:, None] ** 2 + 4 * delta[:, None] * (2 * th + delta[:, None])  # (b, r)
        safe = ((tol < 0.5 * th2) & (16 * delta[:, None] < th)).all(1)
        tol_b = tol.max(1)
        # Comparing with one number per threshold is several times faster than with a column of
        # per-row tolerances. Rows whose tolerance is tiny next to the threshold spacing share the
        # largest of theirs: a larger tolerance only leaves a few more entries to the exact kernel.
        shared = tol_b <= 1e-4 * np.diff(th2, prepend=0.0).min()
        with np.errstate(invalid="ignore"):
            if shared.all():
                L2, fails = self._bands(E, th2, tol_b.max())
            else:
                L2, fails = np.empty(E.shape, np.int8), np.empty((len(rows), len(th2)), np.int32)
                sh, ot = np.nonzero(shared)[0], np.nonzero(~shared)[0]
                if len(sh):
                    L2[sh], fails[sh] = self._bands(E[sh], th2, tol_b[sh].max())
                L2[ot], fails[ot] = self._bands(E[ot], th2, tol_b[ot, None])
            bad = np.nonzero(~np.isfinite(SE))[0]
            if len(bad):
                L2[bad] = np.where(np.isnan(E[bad]), 2 * len(th2), L2[bad])
        amb = np.bitwise_and(L2, 1).view(bool)
        amb[~safe] = True
        L = np.right_shift(L2, 1, out=L2)
        empty = np.zeros(0, int)
        bi, ji = np.nonzero(amb) if np.count_nonzero(amb) else (empty, empty)  # counting is much cheaper
        if len(bi):
            e = sq_err_pairs(A, t, self.X, self.G, bi, ji)
            with np.errstate(invalid="ignore"):
                L[bi, ji] = (e[:, None] >= th2).sum(1) + np.isnan(e) * len(th2)
        # the sure-outlier counts are exact on rows without undecided or NaN entries
        redo = np.union1d(np.unique(bi), bad)
        c = n - fails
        if len(redo):
            c[redo] = _level_counts(L[redo], np.arange(len(th2)))
        if len(rows) == B:
            return L, c, lb
        out[rows], counts[rows] = L, c
        return out, counts, lb

    @staticmethod
    def _bands(E: np.ndarray, th2: np.ndarray, tol) -> Tuple[np.ndarray, np.ndarray]:
        """Twice the level where ``E`` is farther than ``tol`` (a number or a (B, 1) column) from
        every sorted squared threshold, odd where it is within; and the entries at least ``tol``
        above each threshold (sure outliers), counted per row."""
        L2 = np.zeros(E.shape, np.int8)
        ge = np.empty(E.shape, bool)
        fails = np.empty((len(E), len(th2)), np.int32)
        for q, v in enumerate(th2):
            L2 += np.greater_equal(E, v - tol, out=ge).view(np.int8)
            L2 += np.greater_equal(E, v + tol, out=ge).view(np.int8)
            fails[:, q] = ge.view(np.int8).sum(1, dtype=np.int32)
        return L2, fails

    @staticmethod
    def _sum_lower_bound(SE: np.ndarray, n: int, T1: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """Lower bounds on the rounded sums of the exact kernel's squared errors from the row sums
        ``SE`` of the n GEMM ones.

        Per entry ``|E - |d_c|^2| <= T1`` (GEMM rounding) and the kernel's error vector is within
        ``delta`` of ``d_c``, so ``e >= (1 - 4 eps) (u - delta)_+^2 >= (1 - 4 eps)(u^2 - 2 delta u)``
        with ``u^2 = (E - T1)_+``; ``sum u <= sqrt(n sum u^2)`` (Cauchy-Schwarz). Rounding of both
        sums is covered by a relative ``4 n eps`` and the constants are doubled for slack.
        NaN/inf errors give a NaN bound, which never prunes anything."""
        with np.errstate(invalid="ignore", over="ignore"):
            aSE = np.abs(SE) + 4 * n * T1
            slack = 4 * n * T1 + 4 * delta * np.sqrt(n * aSE) + 8 * n * EPS * aSE
            return SE - slack


def _rowwise_gemm(a: np.ndarray, b: np.ndarray, rows: int = 32) -> np.ndarray:
    """``a @ b`` for a tall ``a`` as a stack of small products: each is below OpenBLAS's threading
    threshold, which is several times faster than one threaded GEMM with a small inner dimension
    on a busy machine. The rounding changes, which the callers' error bounds allow for."""
    m = len(a)
    pad = np.zeros((-m % rows, a.shape[1]))
    stacked = np.concatenate([a, pad]).reshape(-1, rows, a.shape[1])
    return np.matmul(stacked, b).reshape(-1, b.shape[1])[:m]


def _level_counts(L: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(B, r) inliers per threshold from the (B, n) levels of :meth:`Screen.levels`."""
    B, r = len(L), len(rank)
    hist = np.bincount((np.arange(B)[:, None] * (r + 1) + L).ravel(), minlength=B * (r + 1))
    return np.cumsum(hist.reshape(B, r + 1), 1)[:, rank]
