"""The fast triplet search (``metric.search``) gives the plain reference's models, and the score
built on it the reference's numbers and table."""
import zlib

import numpy as np
import pytest

import cases  # tests/metric/cases.py
from cases import TH
from memposer import geometry as geo
from memposer.data.imc import OUTLIER_SCENE
from memposer.metric import register, score_submission
from memposer.metric import score as score_mod
from memposer.metric import search
from memposer.metric.kernels import fit, horn, sq_err
from memposer.metric.reference import register_reference
from memposer.metric.screen import Screen

CONFS = {"official": (0.0, -1.0), "heuristic": (0.8, 0.5)}


# ---------------------------------------------------------------- helpers
def _similar(G: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``G`` seen in another frame: x = (R^T (g - t)) / s for a random similarity."""
    R, s, t = geo.random_rotation(rng), rng.uniform(0.2, 5.0), rng.normal(size=3) * 10
    return (G - t) @ R / s


def _random_case(rng: np.random.Generator, kind: str):
    n = int(rng.integers(3, 15))
    if kind == "grid":  # integer coordinates: many exactly tied inlier counts and error sums
        G = rng.integers(-2, 3, size=(n, 3)).astype(float)
        X = G + rng.integers(-1, 2, size=3)
        moved = rng.random(n) < 0.3
        X[moved] += rng.integers(-1, 2, size=(moved.sum(), 3))
        th = [0.5, 1.0, 1.5, 2.0, 3.0]
    else:
        G = rng.normal(size=(n, 3)) * 3
        X = _similar(G + rng.normal(size=G.shape) * rng.choice([0.0, 0.02, 0.1, 0.4]), rng)
        bad = rng.random(n) < rng.choice([0.0, 0.2, 0.5])
        X[bad] = rng.normal(size=(bad.sum(), 3)) * 5  # outliers
        th = list(TH)
        if kind == "degenerate":  # repeated predicted centres and collinear truth: non-finite Horn models
            X[: n // 2] = X[0]
            G[:, 1:] = G[:, :1] * [2.0, -1.0]
    X[rng.random(n) < 0.15] = np.nan
    if rng.random() < 0.3:
        th = list(rng.permutation(th))  # thresholds need not come sorted
    return X, G, th


def _assert_same(a, b):
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.n_inliers, b.n_inliers)
    np.testing.assert_array_equal(a.err, b.err)
    np.testing.assert_array_equal(a.fit, b.fit)
    np.testing.assert_array_equal(a.triplet, b.triplet)
    np.testing.assert_array_equal(a.A, b.A)
    np.testing.assert_array_equal(a.t, b.t)


# ---------------------------------------------------------------- (a) fast == reference
@pytest.mark.parametrize("conf", list(CONFS))
@pytest.mark.parametrize("kind", ["noisy", "grid", "degenerate"])
def test_fast_register_equals_reference(kind, conf):
    rng = np.random.default_rng(zlib.crc32(f"{kind}/{conf}".encode()))
    inl_cf, strict_cf = CONFS[conf]
    for _ in range(12):
        X, G, th = _random_case(rng, kind)
        ref = register_reference(X, G, th, inl_cf, strict_cf)
        for chunk in (5, 4096):  # chunk boundaries inside and outside the replayed updates
            _assert_same(register(X, G, th, inl_cf, strict_cf, chunk=chunk), ref)


@pytest.mark.parametrize("seed, kind", [(1038, "noisy"), (1190, "noisy"), (1944, "noisy"), (2105, "grid")])
def test_fast_register_equals_reference_where_strict_skip_matters(seed, kind):
    """Rare inputs (found by search over seeds) where skipping all-strict triplets changes the result."""
    X, G, th = _random_case(np.random.default_rng(seed), kind)
    skip, no_skip = register(X, G, th, 0.8, 0.5), register(X, G, th, 0.8, -1.0)
    assert not (np.array_equal(skip.n_inliers, no_skip.n_inliers) and np.array_equal(skip.err, no_skip.err))
    for chunk in (5, 4096):
        _assert_same(register(X, G, th, 0.8, 0.5, chunk=chunk), register_reference(X, G, th, 0.8, 0.5))


def test_fast_register_equals_reference_medium_scene():
    rng = np.random.default_rng(7)
    G = rng.normal(size=(24, 3)) * 3
    X = _similar(G + rng.normal(size=G.shape) * 0.05, rng)
    X[[2, 9, 17]] = rng.normal(size=(3, 3)) * 5
    X[5] = np.nan
    for inl_cf, strict_cf in CONFS.values():
        _assert_same(register(X, G, TH, inl_cf, strict_cf, chunk=97), register_reference(X, G, TH, inl_cf, strict_cf))



def test_fast_register_equals_reference_60_cameras():
    """A scene large enough for several screening blocks, many distinct inlier sets and pruned sums."""
    rng = np.random.default_rng(60)
    G = rng.normal(size=(60, 3)) * 10
    X = _similar(G + rng.normal(size=G.shape) * 0.03, rng)
    wild = rng.random(60) < 0.2
    X[wild] = rng.normal(size=(wild.sum(), 3)) * 10
    X[rng.random(60) < 0.1] = np.nan
    ref = register_reference(X, G, TH)
    assert 3 < ref.n_inliers[0] < ref.n_inliers[-1] < 60  # noise and outliers both matter
    for chunk in (32768, 1000):  # one block / blocks that split the triplets of one camera i
        _assert_same(register(X, G, TH, chunk=chunk), ref)


def test_mask_hash_collisions_only_cost_time(monkeypatch):
    """Inlier sets are matched by hash, then byte for byte: colliding hashes must not merge sets."""
    monkeypatch.setattr(search._ModelStore, "_hash", lambda self, packed: [0] * len(packed))
    rng = np.random.default_rng(11)
    for _ in range(6):
        X, G, th = _random_case(rng, "noisy")
        _assert_same(register(X, G, th, chunk=7), register_reference(X, G, th))



def test_fast_register_equals_reference_with_missing_true_centres():
    """Labels without a pose give NaN true centres: such cameras are never inliers."""
    rng = np.random.default_rng(13)
    for _ in range(6):
        X, G, th = _random_case(rng, "noisy")
        G[rng.random(len(G)) < 0.2] = np.nan
        for chunk in (5, 4096):
            _assert_same(register(X, G, th, chunk=chunk), register_reference(X, G, th))


def test_fast_register_equals_reference_far_from_origin_with_ties():
    """Coordinates near 1e8 make rounding tolerances large next to the threshold spacing, and grid
    data put errors on the thresholds: the screen must leave those entries to the exact kernel."""
    rng = np.random.default_rng(17)
    for _ in range(8):
        X, G, th = _random_case(rng, "grid")
        X, G = X + 1e8, G + 1e8
        for chunk in (5, 4096):
            _assert_same(register(X, G, th, chunk=chunk), register_reference(X, G, th))


@pytest.mark.parametrize("offset", [0.0, 1e8])
def test_screen_levels_and_counts_equal_exact_kernel(monkeypatch, offset):
    """Screened levels/counts == the exact kernel's, also where per-row tolerances are too large
    to share one comparison bound (far from the origin)."""
    paths = []
    bands = Screen._bands
    monkeypatch.setattr(Screen, "_bands", staticmethod(lambda E, th2, tol: paths.append(np.ndim(tol)) or bands(E, th2, tol)))
    rng = np.random.default_rng(23)
    th = [0.2, 0.05, 1.0, 0.5, 0.1]  # unsorted on purpose
    G = rng.normal(size=(120, 3)) * 3 + offset
    X = _similar(G - offset + rng.normal(size=G.shape) * 0.05, rng) + offset
    screen = Screen(X, G, np.square(th))
    tri = rng.integers(0, 120, (3000, 3))
    A, t = horn(X[tri], G[tri])                         # triplet models
    A[:1000], t[:1000] = fit(rng.random((1000, 120)) < 0.7, X, G)  # refined ones
    rank = np.argsort(np.argsort(th))
    L, counts, _ = screen.levels(A, t, rank)
    e = sq_err(A, t, X, G)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(L, (e[..., None] >= np.sort(np.square(th))).sum(-1) + np.isnan(e) * len(th))
        np.testing.assert_array_equal(counts, (e[..., None] < np.square(th)).sum(1))
    assert (2 in paths) == (offset > 0)  # far from the origin the per-row (column) path is taken

def test_error_sum_lower_bound_holds_and_is_tight():
    """The GEMM-based lower bound on a model's exact error sum, which lets the search skip exact sums."""
    rng = np.random.default_rng(5)
    for offset, noise in [(0.0, 0.01), (1e4, 0.01), (0.0, 0.0), (50.0, 3.0)]:
        G = rng.normal(size=(80, 3)) * 10 + offset
        X = _similar(G + rng.normal(size=G.shape) * noise, rng)
        screen = Screen(X, G, np.square(TH))
        A, t = horn(X[rng.integers(0, 80, (500, 3))], G[rng.integers(0, 80, (500, 3))])
        A[:250], t[:250] = fit(rng.random((250, 80)) < 0.7, X, G)  # good models too
        _, _, lb = screen.levels(A, t, np.arange(len(TH)))
        exact = sq_err(A, t, X, G).sum(-1)
        ok = np.isfinite(exact)
        assert (lb[ok] <= exact[ok]).all()
        assert np.isneginf(lb[~ok]).all()
        big = ok & (exact > 1e-3)  # tight enough to separate near-best models' sums
        assert (exact[big] - lb[big] <= 1e-4 * exact[big]).all()
        assert big[:250].sum() > 100 or noise == 0


def test_tiny_scenes():
    rng = np.random.default_rng(3)
    for n in range(0, 7):
        G = rng.normal(size=(n, 3))
        X = _similar(G, rng)
        ref = register_reference(X, G, TH)
        reg = register(X, G, TH)
        _assert_same(reg, ref)
        assert reg.n_inliers.tolist() == ([n] * 5 if n >= 3 else [0] * 5)


def _rows(table):
    return [(r.dataset, r.scene, r.image, r.cluster, repr(r.error), r.passed, r.used_for_alignment, r.in_triplet)
            for r in table]


def _scored_with(monkeypatch, fn, labels, sub, ths, conf):
    monkeypatch.setattr(score_mod, "register", fn)
    res = score_submission(labels, sub, ths, conf)
    monkeypatch.undo()
    return res


@pytest.mark.parametrize("conf", list(CONFS))
def test_score_fast_equals_reference_on_submissions(monkeypatch, conf):
    """Whole submissions (NaN poses, missing rows, mixed clusters): same table and numbers."""
    rng = np.random.default_rng(11)
    cf = dict(zip(("inl_cf", "strict_cf"), CONFS[conf]))
    for _ in range(4):
        scenes = {f"s{k}": rng.normal(size=(int(rng.integers(3, 10)), 3)) * 3 for k in range(3)}
        scenes[OUTLIER_SCENE] = rng.normal(size=(3, 3))
        labels = cases.labels("ds", scenes, rng)
        names = [r.image for r in labels]
        assign = {im: rng.choice(["a", "b", "c", OUTLIER_SCENE], p=[0.4, 0.3, 0.2, 0.1]) for im in names}
        for im in rng.choice(names, 3, replace=False):
            del assign[im]  # missing rows
        centers = {}
        shift = {c: rng.normal(size=3) * 3 for c in "abc"}
        for r in labels:
            c = geo.camera_center(r.R, r.t) + shift.get(assign.get(r.image), 0) + rng.normal(size=3) * 0.1
            centers[r.image] = np.full(3, np.nan) if rng.random() < 0.15 else c
        sub = cases.cluster(labels, assign, centers)
        ths = cases.ths("ds", [s for s in scenes if s != OUTLIER_SCENE])
        ref = _scored_with(monkeypatch, lambda p, g, th, i, s, chunk: register_reference(p, g, th, i, s),
                           labels, sub, ths, cf)
        fast = score_submission(labels, sub, ths, cf)
        assert fast.score == ref.score
        assert fast.datasets["ds"] == ref.datasets["ds"]
        assert _rows(fast.table) == _rows(ref.table)
        assert {k: (v.cluster, v.mAA, v.n_counted) for k, v in fast.scenes.items()} == \
               {k: (v.cluster, v.mAA, v.n_counted) for k, v in ref.scenes.items()}
