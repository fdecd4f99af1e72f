"""The IMC2025 score, reproduced exactly and fast.

Per (true scene, predicted cluster) the predicted camera centres of the shared images are aligned
to the true centres with a similarity found by an exhaustive RANSAC over camera triplets (Horn's
quaternion method per triplet, least-squares refinement on each triplet's inliers, one best model
per threshold). mAA counts, per threshold except the ``skip_top_thresholds`` smallest, the cameras
within the threshold minus ``to_dec`` (the cameras a minimal model always fits). Each true scene is
associated with the cluster sharing most images with it (ties: higher mAA, then first cluster in
file order); clusterness = shared images / sizes of the associated clusters. Per dataset the score
is the harmonic mean of mAA and clusterness; the final score is the mean over datasets.

Details taken from the organisers' ``score()`` and matched here:

- Defaults ``inl_cf=0, strict_cf=-1`` (every triplet tried, every inlier set with > 2 cameras
  refined); the heuristic ``inl_cf=0.8, strict_cf=0.5`` of earlier challenges is available too.
- A triplet's inlier set at a threshold is skipped when it equals the set at a smaller threshold
  *index*; a refined model replaces the best one of *every* threshold where it has more inliers, or
  as many with a smaller sum of squared errors over *all* cameras. The first such model is kept.
- Inliers use ``err^2 < th^2``; mAA uses ``err < th`` with ``err`` the distance to the truth.
- Predicted centres that are not finite drop out of the registration; they still count as shared.
- Dataset mAA pools counts: ``sum_scenes sum_th max(0, k - 3) / (lt * (sum_scenes m - 3 * n_scenes))``
  with ``m`` the true scene size (so scenes with < 3 images shrink the denominator); 0 if that is 0.
- A true scene sharing no image with any cluster is associated with the *first* cluster of the
  submission (its size then counts in the clusterness denominator), as in the official code.

Where the official code refuses a submission (missing, duplicated or foreign images) this module
decides instead, with a warning: a missing image counts as if it were in the ``outliers`` cluster,
a duplicate row is dropped (first row kept), an image not in the labels is ignored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from memposer.data.imc import OUTLIER_SCENE, PoseRecord
from memposer.geometry import camera_center, quat_to_R

log = logging.getLogger(__name__)

default_conf = {
    "inl_cf": 0.0,            # refine a triplet's inliers when more than inl_cf * best so far
    "strict_cf": -1.0,        # skip triplets of cameras within strict_cf * th for the best model
    "skip_top_thresholds": 2,  # smallest thresholds left out of mAA
    "to_dec": 3,              # cameras of the minimal model, not counted
    "chunk": 32768,           # triplets evaluated at once by the fast search
}
_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------- numeric kernels
# Every kernel works on a batch and gives bit-identical results for one item whatever the batch
# size (elementwise arithmetic, explicit sums, per-matrix LAPACK calls): the fast search and the
# plain reference share them, so they make the same decisions.

def _horn(src: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
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
        t = mu_d - _apply(A, mu_s)
    return A, t


def _apply(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``A @ x`` for (B, 3, 3) and (B, 3), written out so the rounding never depends on B."""
    return np.stack([A[:, r, 0] * x[:, 0] + A[:, r, 1] * x[:, 1] + A[:, r, 2] * x[:, 2] for r in range(3)], -1)


def _kabsch(src: np.ndarray, dst: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Least-squares rotation (SVD) with RMS-ratio scale for (K, k, 3) point sets, k >= 3."""
    # (K, 3, k): sums run along the last axis
    return _kabsch_t(np.ascontiguousarray(src.transpose(0, 2, 1)), np.ascontiguousarray(dst.transpose(0, 2, 1)))


def _kabsch_t(s: np.ndarray, d: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_kabsch` of point sets given coordinate-major, (K, 3, k) C-contiguous."""
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
        t = mu_d - _apply(A, mu_s)
    return A, t


def _matmul3(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    return P[..., :, 0, None] * Q[..., None, 0, :] + P[..., :, 1, None] * Q[..., None, 1, :] + P[..., :, 2, None] * Q[..., None, 2, :]


def _det3(M: np.ndarray) -> np.ndarray:
    return (M[:, 0, 0] * (M[:, 1, 1] * M[:, 2, 2] - M[:, 1, 2] * M[:, 2, 1])
            - M[:, 0, 1] * (M[:, 1, 0] * M[:, 2, 2] - M[:, 1, 2] * M[:, 2, 0])
            + M[:, 0, 2] * (M[:, 1, 0] * M[:, 2, 1] - M[:, 1, 1] * M[:, 2, 0]))


def _sq_err(A: np.ndarray, t: np.ndarray, X: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Squared distances ``|A x_j + t - g_j|^2``: (B, 3, 3), (B, 3), (n, 3), (n, 3) -> (B, n)."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = 0.0
        for r in range(3):
            p = A[:, r, 0, None] * X[None, :, 0] + A[:, r, 1, None] * X[None, :, 1] + A[:, r, 2, None] * X[None, :, 2] + t[:, r, None]
            d = p - G[None, :, r]
            e = e + d * d
    return e


def _sq_err_pairs(A, t, X, G, bi: np.ndarray, ji: np.ndarray) -> np.ndarray:
    """:func:`_sq_err` at selected (model, camera) pairs; same operations, same rounding."""
    with np.errstate(invalid="ignore", over="ignore"):
        e = 0.0
        for r in range(3):
            p = A[bi, r, 0] * X[ji, 0] + A[bi, r, 1] * X[ji, 1] + A[bi, r, 2] * X[ji, 2] + t[bi, r]
            d = p - G[ji, r]
            e = e + d * d
    return e


def _fit(masks: np.ndarray, X: np.ndarray, G: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
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


def _refine(masks: np.ndarray, X: np.ndarray, G: np.ndarray, th2: np.ndarray):
    """Refined models of inlier masks (K, n): A, t, squared errors (K, n), inlier counts (K, r), error sums."""
    A, t = _fit(masks, X, G)
    err = _sq_err(A, t, X, G)
    with np.errstate(invalid="ignore"):
        n_inl = (err[:, :, None] < th2).sum(1)
    return A, t, err, n_inl, err.sum(-1)


# ---------------------------------------------------------------- registration
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


class _State:
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


def _finish(valid, X, G, th, state: _State, models: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Registration:
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


def _register_reference(pred: np.ndarray, gt: np.ndarray, thresholds, inl_cf: float = 0.0,
                        strict_cf: float = -1.0) -> Registration:
    """The organisers' triplet loop, written plainly (O(n^3) Python iterations). For tests."""
    th = np.asarray(thresholds, np.float64)
    th2 = th ** 2
    valid = np.isfinite(pred).all(1)
    X, G = pred[valid], gt[valid]
    n, r = len(X), len(th)
    st = _State(n, r)
    models, seen = {}, {}
    for i in range(n - 2):
        for j in range(i + 1, n - 1):
            for k in range(j + 1, n):
                tri = [i, j, k]
                if st.strict_all[tri].all():
                    continue
                A, t = _horn(X[tri][None], G[tri][None])
                with np.errstate(invalid="ignore"):
                    inl = _sq_err(A, t, X, G)[0][:, None] < th2  # (n, r)
                no_inl = inl.sum(0)
                to_ref = (no_inl > 2) & (no_inl > st.n_inl * inl_cf)
                for q in np.nonzero(to_ref)[0]:
                    if any(np.array_equal(inl[:, q], inl[:, p]) for p in range(q)):
                        continue
                    key = inl[:, q].tobytes()
                    if key not in seen:
                        seen[key] = len(seen)
                    Ar, tr, e, n_ref, s_ref = _refine(inl[:, q][None], X, G, th2)
                    upd = st.better(n_ref[0], s_ref[0])
                    if upd.any():
                        models[seen[key]] = (Ar[0], tr[0], inl[:, q].copy())
                        st.update(upd, seen[key], n_ref[0], s_ref[0], e[0], tri, th, strict_cf)
    return _finish(valid, X, G, th, st, models)


def _triplet_chunks(n: int, chunk: int):
    """All triplets i < j < k in lexicographic order, in blocks of ``chunk`` rows (the last may be
    shorter); small blocks keep the (block, n) work arrays in cache."""
    jj, kk = np.triu_indices(n, 1)  # pairs (j, k), j < k, lexicographic
    start_of = np.searchsorted(jj, np.arange(n))  # pairs with j > i start at start_of[i + 1]
    start, buf = 0, np.zeros((0, 3), int)
    for i in range(n - 2):
        s = start_of[i + 1]
        buf = np.concatenate([buf, np.column_stack([np.full(len(jj) - s, i), jj[s:], kk[s:]])])
        while len(buf) >= chunk or (i == n - 3 and len(buf)):
            tri, buf = buf[:chunk], buf[chunk:]
            yield start, tri
            start += len(tri)


class _Screen:
    """Inlier masks of many models at once: a GEMM gives the squared errors up to a proven bound;
    only entries within that bound of a threshold are recomputed with :func:`_sq_err`."""

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
        :func:`_sq_err` would give; camera j is an inlier at sorted threshold q iff level <= q.
        Counts (B, r): inliers per threshold, thresholds in their given order (``rank``: position of
        each once sorted). Bounds (B,): lower bounds on ``_sq_err(A, t, X, G).sum(-1)`` (see
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
        tc = t + _apply(A, np.broadcast_to(self.cx, t.shape)) - self.cg
        P = np.einsum("bki,bkj->bij", A, A)
        Atc = np.einsum("bki,bk->bi", A, tc)
        coef = np.concatenate([
            P[:, [0, 1, 2], [0, 1, 2]], 2 * P[:, [0, 0, 1], [1, 2, 2]], 2 * Atc, -2 * A.reshape(-1, 9),
            -2 * tc, (tc ** 2).sum(1, keepdims=True), np.ones((len(A), 1))], 1)
        E = _rowwise_gemm(coef, self.F)
        # error bound: GEMM rounding on centred data + rounding of the exact kernel on raw data
        nA = np.linalg.norm(A.reshape(-1, 9), axis=1)
        mag_c = nA * self.xmax_c + np.linalg.norm(tc, axis=1) + self.gmax_c
        delta = 64 * _EPS * (nA * self.xmax + np.linalg.norm(t, axis=1) + self.gmax)
        SE = E.sum(1)  # non-finite iff the row has a NaN or inf entry (or overflows: harmless)
        lb[rows] = self._sum_lower_bound(SE, n, 1e3 * _EPS * mag_c ** 2, delta)
        th = np.sqrt(th2)
        tol = 1e3 * _EPS * mag_c[:, None] ** 2 + 4 * delta[:, None] * (2 * th + delta[:, None])  # (b, r)
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
            e = _sq_err_pairs(A, t, self.X, self.G, bi, ji)
            with np.errstate(invalid="ignore"):
                L[bi, ji] = (e[:, None] >= th2).sum(1) + np.isnan(e) * len(th2)
        # the sure-outlier counts are exact on rows without undecided or NaN entries
        redo = np.union1d(np.unique(bi), bad)
        c = n - fails
        if len(redo):
            c[redo] = _counts(L[redo], np.arange(len(th2)))
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
            slack = 4 * n * T1 + 4 * delta * np.sqrt(n * aSE) + 8 * n * _EPS * aSE
            return SE - slack


def _rowwise_gemm(a: np.ndarray, b: np.ndarray, rows: int = 32) -> np.ndarray:
    """``a @ b`` for a tall ``a`` as a stack of small products: each is below OpenBLAS's threading
    threshold, which is several times faster than one threaded GEMM with a small inner dimension
    on a busy machine. The rounding changes, which the callers' error bounds allow for."""
    m = len(a)
    pad = np.zeros((-m % rows, a.shape[1]))
    stacked = np.concatenate([a, pad]).reshape(-1, rows, a.shape[1])
    return np.matmul(stacked, b).reshape(-1, b.shape[1])[:m]


def register(pred: np.ndarray, gt: np.ndarray, thresholds, inl_cf: float = 0.0, strict_cf: float = -1.0,
             chunk: int = 32768) -> Registration:
    """Align predicted camera centres (n, 3) to true ones with the organisers' triplet search.

    Gives the same models as :func:`_register_reference` (the plain O(n^3)-iteration loop) but
    evaluates triplets in vectorised blocks (:class:`_Screen`), refines every distinct inlier set
    once (:class:`_ModelStore`), computes a refined model's exact error sum only when its inlier
    counts could beat the best model and a proven lower bound on the sum does not already lose,
    and replays the sequential best-model updates only where one happens (:func:`_replay`).
    """
    th = np.asarray(thresholds, np.float64)
    th2 = th ** 2
    rank = np.argsort(np.argsort(th, kind="stable"), kind="stable")  # position of each threshold once sorted
    valid = np.isfinite(pred).all(1)
    X, G = np.ascontiguousarray(pred[valid], np.float64), np.ascontiguousarray(gt[valid], np.float64)
    n, r = len(X), len(th)
    st = _State(n, r)
    if n < 3:
        return _finish(valid, X, G, th, st, {})
    screen = _Screen(X, G, th2)
    store = _ModelStore(X, G, r)
    for _, tri in _triplet_chunks(n, chunk):
        A, t = _horn(X[tri], G[tri])
        L, no_inl, _ = screen.levels(A, t, rank)                        # (B, n), (B, r)
        first = np.ones(no_inl.shape, bool)  # the set differs from those at all smaller threshold indices
        for q in range(1, r):                # (sets are nested, so equal sets <=> equal counts)
            first[:, q] = (no_inl[:, q, None] != no_inl[:, :q]).all(1)
        cb, cq = np.nonzero(first & (no_inl > 2))
        if len(cb):
            mid = store.ids(L[cb] <= rank[cq][:, None], screen, rank)
            _replay(st, store, tri, cb, cq, mid, no_inl[cb, cq], th, inl_cf, strict_cf)
    models = {m: (store.A[m], store.t[m], store.mask(m)) for m in set(st.model[st.model >= 0].tolist())}
    return _finish(valid, X, G, th, st, models)


def _counts(L: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """(B, r) inliers per threshold from the (B, n) levels of :meth:`_Screen.levels`."""
    B, r = len(L), len(rank)
    hist = np.bincount((np.arange(B)[:, None] * (r + 1) + L).ravel(), minlength=B * (r + 1))
    return np.cumsum(hist.reshape(B, r + 1), 1)[:, rank]


def _replay(st: _State, store: "_ModelStore", tri, cb, cq, mid, cand_ninl, th, inl_cf, strict_cf) -> None:
    """Apply, in the reference's order, the updates of a block's candidates (triplet ``cb``,
    threshold ``cq``, refined model ``mid``): jump to the next candidate that beats the state, then
    replay its whole triplet sequentially (eligibility uses the state from before the triplet)."""
    pos = 0
    while pos < len(cb):
        # eligibility and "would improve" under the current state, for all remaining candidates
        b, q, m = cb[pos:], cq[pos:], mid[pos:]
        elig = ~st.strict_all[tri[b]].all(1) & (cand_ninl[pos:] > st.n_inl[q] * inl_cf)
        n_ref = store.n_inl[m]
        # an exact error sum is needed only where the count wins, or ties and the sum's lower
        # bound does not already lose (NaN bounds never prune)
        with np.errstate(invalid="ignore"):
            tie_open = (n_ref == st.n_inl) & ~(store.lb[m][:, None] >= st.err_sum)
        need = elig & ((n_ref > st.n_inl) | tie_open).any(1)
        store.exact_sums(m[need])
        hit = need & st.better(n_ref, store.sum[m]).any(1)
        if not hit.any():
            break
        h = pos + int(np.argmax(hit))
        end = h
        while end < len(cb) and cb[end] == cb[h]:
            end += 1
        for e in range(h, end):
            if elig[e - pos]:
                me = mid[e]
                store.exact_sums(np.array([me]))
                upd = st.better(store.n_inl[me], store.sum[me])
                if upd.any():
                    st.update(upd, me, store.n_inl[me], store.sum[me], store.sq_err(me), tri[cb[h]], th, strict_cf)
        pos = end


class _ModelStore:
    """Refined models by inlier mask: parameters, exact inlier counts, lower bounds on the error
    sums, and exact error sums computed on demand.

    A refined model depends only on its mask, so each distinct mask is refined once. Masks are
    found by a 64-bit hash and then compared byte for byte; a hash collision only costs a second
    refinement of an equal model (same id rules as the reference: any id of the mask gives the
    same A, t and mask)."""

    def __init__(self, X: np.ndarray, G: np.ndarray, r: int):
        self.X, self.G, self.size = X, G, 0
        nb = (len(X) + 7) // 8
        self.A, self.t = np.zeros((0, 3, 3)), np.zeros((0, 3))
        self.n_inl, self.sum, self.lb = np.zeros((0, r), int), np.zeros(0), np.zeros(0)
        self.known = np.zeros(0, bool)
        self.packed = np.zeros((0, nb), np.uint8)
        self.by_hash: Dict[int, int] = {}
        self.mult = np.random.default_rng(0).integers(1, 2 ** 63, (nb + 7) // 8, np.uint64) * np.uint64(2) + np.uint64(1)

    def _hash(self, packed: np.ndarray) -> List[int]:
        words = np.zeros((len(packed), 8 * len(self.mult)), np.uint8)
        words[:, :packed.shape[1]] = packed
        return (words.view(np.uint64) * self.mult).sum(1).tolist()  # wraps modulo 2^64

    def ids(self, masks: np.ndarray, screen: "_Screen", rank: np.ndarray) -> np.ndarray:
        """Model id of each (K, n) inlier mask; masks never seen before are refined and stored."""
        packed = np.packbits(masks, axis=1)
        uniq, first_row, inv = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(),
                                         return_index=True, return_inverse=True)
        rows = packed[first_row]                                          # (U, nb), distinct
        keys = self._hash(rows)
        found = np.array([self.by_hash.get(k, -1) for k in keys], int)
        hit = found >= 0
        hit[hit] = (self.packed[found[hit]] == rows[hit]).all(1)         # collisions count as new
        new = np.nonzero(~hit)[0]
        if len(new):
            found[new] = self.size + np.arange(len(new))
            for u in new.tolist():
                self.by_hash.setdefault(keys[u], int(found[u]))
            self._add(masks[first_row[new]], rows[new], screen, rank)
        return found[inv.ravel()]

    def _add(self, masks: np.ndarray, packed: np.ndarray, screen: "_Screen", rank: np.ndarray) -> None:
        A, t = _fit(masks, self.X, self.G)
        _, counts, lb = screen.levels(A, t, rank)
        a, b = self.size, self.size + len(A)
        if b > len(self.A):  # grow geometrically: appending stays linear in the number of models
            cap = max(b, 2 * len(self.A), 1024)
            for name in ("A", "t", "n_inl", "sum", "lb", "known", "packed"):
                old = getattr(self, name)
                grown = np.zeros((cap,) + old.shape[1:], old.dtype)
                grown[:a] = old[:a]
                setattr(self, name, grown)
        self.A[a:b], self.t[a:b], self.n_inl[a:b] = A, t, counts
        self.sum[a:b], self.lb[a:b], self.known[a:b], self.packed[a:b] = np.nan, lb, False, packed
        self.size = b

    def exact_sums(self, ids: np.ndarray) -> None:
        ids = np.unique(ids[~self.known[ids]])
        if len(ids):
            self.sum[ids] = _sq_err(self.A[ids], self.t[ids], self.X, self.G).sum(-1)
            self.known[ids] = True

    def sq_err(self, m: int) -> np.ndarray:
        return _sq_err(self.A[m][None], self.t[m][None], self.X, self.G)[0]

    def mask(self, m: int) -> np.ndarray:
        return np.unpackbits(self.packed[m], count=len(self.X)).astype(bool)


# ---------------------------------------------------------------- scoring


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
        from memposer.geometry import apply_similarity
        return apply_similarity(R, t, self.s, self.R, self.t)


@dataclass
class SceneResult:
    """A true scene, its associated cluster and the registration behind its mAA."""

    dataset: str
    scene: str
    cluster: Optional[str]      # associated predicted cluster (None: no cluster at all)
    n_images: int               # true scene size
    n_shared: int               # images of the scene in the cluster
    cluster_size: int           # rows of the cluster in the submission
    mAA: float                  # this pair's mAA (the official per-pair value)
    n_counted: int              # sum over scored thresholds of max(0, registered - to_dec)
    images: List[str] = field(default_factory=list)      # shared images, true-scene order
    registration: Optional[Registration] = None
    alignment: Optional[Alignment] = None


@dataclass
class DatasetResult:
    score: float
    mAA: float
    clusterness: float
    scenes: List[str] = field(default_factory=list)


@dataclass
class ImageRow:
    """One line of the per-image registration table."""

    dataset: str
    scene: str
    image: str
    cluster: Optional[str]   # cluster given in the submission (None: missing row)
    error: float             # distance to the truth after the best alignment (largest threshold); nan if not registered
    passed: Tuple[bool, ...]  # per threshold, with that threshold's own best model
    used_for_alignment: bool  # in the inlier set the best model (largest threshold) was fitted on
    in_triplet: bool          # one of the three cameras of that model's minimal sample


@dataclass
class Result:
    score: float
    datasets: Dict[str, DatasetResult]
    scenes: Dict[Tuple[str, str], SceneResult]
    table: List[ImageRow]
    thresholds: Dict[str, Dict[str, List[float]]]

    def alignment(self, dataset: str, scene: str) -> Optional[Alignment]:
        s = self.scenes.get((dataset, scene))
        return None if s is None else s.alignment


def _centers(records: List[PoseRecord]) -> np.ndarray:
    c = np.full((len(records), 3), np.nan)
    for i, r in enumerate(records):
        if r.R is not None and r.t is not None:
            with np.errstate(all="ignore"):
                c[i] = camera_center(np.asarray(r.R, np.float64).reshape(3, 3), np.asarray(r.t, np.float64))
    return c


def _clean_submission(dataset: str, gt_images: set, rows: List[PoseRecord]) -> List[PoseRecord]:
    out, seen, foreign = [], set(), 0
    for r in rows:
        if r.image not in gt_images:
            foreign += 1
        elif r.image in seen:
            log.warning("%s: duplicate row for image %s dropped (first row kept)", dataset, r.image)
        else:
            seen.add(r.image)
            out.append(r)
    if foreign:
        log.warning("%s: %d submission rows name images not in the labels; ignored", dataset, foreign)
    missing = len(gt_images) - len(seen)
    if missing:
        log.warning("%s: %d labelled images have no submission row; counted as outliers", dataset, missing)
    return out


def _alignment(reg: Registration, q: int) -> Optional[Alignment]:
    A, t = reg.A[q], reg.t[q]
    if not np.isfinite(A).all():
        return None
    s = float(np.cbrt(np.linalg.det(A)))
    return Alignment(s, A / s, t.copy())


def score_submission(labels: List[PoseRecord], submission: List[PoseRecord], thresholds: Dict[str, Dict[str, List[float]]],
                     conf: Optional[dict] = None) -> Result:
    """Score a submission against labels with per-scene thresholds, as the IMC2025 metric does."""
    conf = {**default_conf, **(conf or {})}
    skip, to_dec = conf["skip_top_thresholds"], conf["to_dec"]
    by_ds: Dict[str, Dict[str, List[PoseRecord]]] = {}
    for r in labels:
        by_ds.setdefault(r.dataset, {}).setdefault(r.scene, []).append(r)
    sub_ds: Dict[str, List[PoseRecord]] = {}
    for r in submission:
        sub_ds.setdefault(r.dataset, []).append(r)
    n_th = {len(v) for ds in by_ds for sc, v in thresholds.get(ds, {}).items() if sc != OUTLIER_SCENE}
    if len(n_th) > 1:
        raise ValueError(f"the number of thresholds varies between scenes: {sorted(n_th)}")
    datasets, scenes, table = {}, {}, []
    for ds, gt_scenes in by_ds.items():
        seen = set()
        for sc, rows in gt_scenes.items():
            for r in rows:
                if r.image in seen:
                    raise ValueError(f"labels: image {r.image} appears twice in dataset {ds}")
                seen.add(r.image)
        if ds not in sub_ds:
            log.warning("dataset %s is missing from the submission; it scores 0", ds)
        rows = _clean_submission(ds, seen, sub_ds.get(ds, []))
        clusters: Dict[str, List[PoseRecord]] = {}
        for r in rows:
            clusters.setdefault(r.scene, []).append(r)
        names = list(clusters)
        where = {r.image: (r.scene, r) for r in rows}
        a = b_images = n_scenes = shared_sum = size_sum = 0
        lt = 0
        for sc, gt_rows in gt_scenes.items():
            if sc == OUTLIER_SCENE:
                continue
            if sc not in thresholds.get(ds, {}):
                raise ValueError(f"no thresholds for scene {ds}/{sc}")
            th = np.asarray(thresholds[ds][sc], np.float64)
            lt = len(th) - skip
            shared = {c: [g for g in gt_rows if where.get(g.image, ("",))[0] == c] for c in names if c != OUTLIER_SCENE}
            best = max((len(v) for v in shared.values()), default=0)
            res = None
            if best > 0:
                # only clusters sharing the most images can be chosen; ties go to the higher mAA, then the first
                for c in names:
                    if c == OUTLIER_SCENE or len(shared[c]) != best:
                        continue
                    cand = _score_pair(ds, sc, c, gt_rows, shared[c], where, len(clusters[c]), th, skip, to_dec, conf)
                    if res is None or cand.mAA > res.mAA:
                        res = cand
            elif names:  # nothing shared: the official argmax falls on the first cluster
                c0 = names[0]
                if c0 == OUTLIER_SCENE:
                    res = SceneResult(ds, sc, c0, 0, 0, 0, 0.0, 0)
                else:
                    res = SceneResult(ds, sc, c0, len(gt_rows), 0, len(clusters[c0]), 0.0, 0)
            else:
                res = SceneResult(ds, sc, None, 0, 0, 0, 0.0, 0)
            scenes[(ds, sc)] = res
            a += res.n_counted
            b_images += res.n_images  # 0 when associated with an 'outliers' cluster, as the official tables
            n_scenes += 1
            shared_sum += res.n_shared
            size_sum += res.cluster_size
        b = max(0, lt * (b_images - n_scenes * to_dec))
        mAA = a / b if b > 0 else 0.0
        clusterness = shared_sum / size_sum if size_sum > 0 else 0.0
        score = 2 * mAA * clusterness / (mAA + clusterness) if mAA + clusterness > 0 else 0.0
        datasets[ds] = DatasetResult(float(score), float(mAA), float(clusterness), [s for s in gt_scenes if s != OUTLIER_SCENE])
        table.extend(_table_rows(ds, gt_scenes, where, scenes, thresholds.get(ds, {})))
    final = float(np.mean([d.score for d in datasets.values()])) if datasets else 0.0
    return Result(final, datasets, scenes, table, thresholds)


def _score_pair(ds, sc, cluster, gt_rows, shared, where, cluster_size, th, skip, to_dec, conf) -> SceneResult:
    pred = _centers([where[g.image][1] for g in shared])
    gt = _centers(shared)
    reg = register(pred, gt, th, conf["inl_cf"], conf["strict_cf"], conf["chunk"])
    ok = reg.err[reg.valid] < th                                   # (n_valid, r)
    counted = int(np.maximum(ok[:, skip:].sum(0) - to_dec, 0).sum())
    m = len(gt_rows)
    mAA = 0.0 if counted == 0 else counted / ((len(th) - skip) * (m - to_dec))
    return SceneResult(ds, sc, cluster, m, len(shared), cluster_size, float(mAA), counted,
                       [g.image for g in shared], reg, _alignment(reg, int(np.argmax(th))))


def _table_rows(ds, gt_scenes, where, scenes, ths) -> List[ImageRow]:
    out = []
    for sc, rows in gt_scenes.items():
        res = scenes.get((ds, sc))
        reg = res.registration if res is not None else None
        th = np.asarray(ths.get(sc, []), np.float64)
        index = {im: i for i, im in enumerate(res.images)} if reg is not None else {}
        qm = int(np.argmax(th)) if len(th) else 0
        for g in rows:
            cluster = where[g.image][0] if g.image in where else None
            i = index.get(g.image)
            if i is None:
                out.append(ImageRow(ds, sc, g.image, cluster, float("nan"), tuple([False] * len(th)), False, False))
                continue
            e = reg.err[i]
            out.append(ImageRow(ds, sc, g.image, cluster, float(e[qm]) if np.isfinite(e[qm]) else float("nan"),
                                tuple(bool(v) for v in e < th), bool(reg.fit[i, qm]), bool(i in reg.triplet[qm])))
    return out
