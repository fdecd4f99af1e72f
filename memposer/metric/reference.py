"""The organisers' triplet search written plainly: the reference the fast search is tested against."""
from __future__ import annotations

import numpy as np

from .kernels import horn, refine, sq_err
from .registration import Registration, State, finish


def register_reference(pred: np.ndarray, gt: np.ndarray, thresholds, inl_cf: float = 0.0,
                       strict_cf: float = -1.0) -> Registration:
    """The organisers' triplet loop, written plainly (O(n^3) Python iterations). For tests."""
    th = np.asarray(thresholds, np.float64)
    th2 = th ** 2
    valid = np.isfinite(pred).all(1)
    X, G = pred[valid], gt[valid]
    n, r = len(X), len(th)
    st = State(n, r)
    models, seen = {}, {}
    for i in range(n - 2):
        for j in range(i + 1, n - 1):
            for k in range(j + 1, n):
                tri = [i, j, k]
                if st.strict_all[tri].all():
                    continue
                A, t = horn(X[tri][None], G[tri][None])
                with np.errstate(invalid="ignore"):
                    inl = sq_err(A, t, X, G)[0][:, None] < th2  # (n, r)
                no_inl = inl.sum(0)
                to_ref = (no_inl > 2) & (no_inl > st.n_inl * inl_cf)
                for q in np.nonzero(to_ref)[0]:
                    if any(np.array_equal(inl[:, q], inl[:, p]) for p in range(q)):
                        continue
                    key = inl[:, q].tobytes()
                    if key not in seen:
                        seen[key] = len(seen)
                    Ar, tr, e, n_ref, s_ref = refine(inl[:, q][None], X, G, th2)
                    upd = st.better(n_ref[0], s_ref[0])
                    if upd.any():
                        models[seen[key]] = (Ar[0], tr[0], inl[:, q].copy())
                        st.update(upd, seen[key], n_ref[0], s_ref[0], e[0], tri, th, strict_cf)
    return finish(valid, X, G, th, st, models)
