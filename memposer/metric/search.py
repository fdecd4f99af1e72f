"""The fast triplet search: the same models as :mod:`memposer.metric.reference`, evaluated in blocks,
each distinct inlier set refined once (a hash store), exact error sums only where they can matter."""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .kernels import fit, horn, sq_err
from .registration import Registration, State, finish
from .screen import Screen


def register(pred: np.ndarray, gt: np.ndarray, thresholds, inl_cf: float = 0.0, strict_cf: float = -1.0,
             chunk: int = 32768) -> Registration:
    """Align predicted camera centres (n, 3) to true ones with the organisers' triplet search.

    Gives the same models as :func:`register_reference` (the plain O(n^3)-iteration loop) but
    evaluates triplets in vectorised blocks (:class:`Screen`), refines every distinct inlier set
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
    st = State(n, r)
    if n < 3:
        return finish(valid, X, G, th, st, {})
    screen = Screen(X, G, th2)
    store = _ModelStore(X, G, r)
    for _, tri in _triplet_chunks(n, chunk):
        A, t = horn(X[tri], G[tri])
        L, no_inl, _ = screen.levels(A, t, rank)                        # (B, n), (B, r)
        first = np.ones(no_inl.shape, bool)  # the set differs from those at all smaller threshold indices
        for q in range(1, r):                # (sets are nested, so equal sets <=> equal counts)
            first[:, q] = (no_inl[:, q, None] != no_inl[:, :q]).all(1)
        cb, cq = np.nonzero(first & (no_inl > 2))
        if len(cb):
            mid = store.ids(L[cb] <= rank[cq][:, None], screen, rank)
            _replay(st, store, tri, cb, cq, mid, no_inl[cb, cq], th, inl_cf, strict_cf)
    models = {m: (store.A[m], store.t[m], store.mask(m)) for m in set(st.model[st.model >= 0].tolist())}
    return finish(valid, X, G, th, st, models)


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


def _replay(st: State, store: "_ModelStore", tri, cb, cq, mid, cand_ninl, th, inl_cf, strict_cf) -> None:
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

    def ids(self, masks: np.ndarray, screen: "Screen", rank: np.ndarray) -> np.ndarray:
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

    def _add(self, masks: np.ndarray, packed: np.ndarray, screen: "Screen", rank: np.ndarray) -> None:
        A, t = fit(masks, self.X, self.G)
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
            self.sum[ids] = sq_err(self.A[ids], self.t[ids], self.X, self.G).sum(-1)
            self.known[ids] = True

    def sq_err(self, m: int) -> np.ndarray:
        return sq_err(self.A[m][None], self.t[m][None], self.X, self.G)[0]

    def mask(self, m: int) -> np.ndarray:
        return np.unpackbits(self.packed[m], count=len(self.X)).astype(bool)
