"""The IMC2025 metric: fast search == plain reference, invariance, and hand-computed scores."""
import zlib
from typing import Dict, List, Optional

import numpy as np
import pytest

from memposer import geometry as geo
from memposer.data.imc import OUTLIER_SCENE, PoseRecord
from memposer.metric import register, score_submission
from memposer.metric import score as score_mod
from memposer.metric import search
from memposer.metric.kernels import fit, horn, sq_err
from memposer.metric.reference import register_reference
from memposer.metric.screen import Screen

TH = [0.05, 0.1, 0.2, 0.5, 1.0]
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


def _rec(ds, scene, image, c: Optional[np.ndarray], R: Optional[np.ndarray] = None) -> PoseRecord:
    if c is None or not np.isfinite(c).all():
        return PoseRecord(ds, scene, image)
    R = np.eye(3) if R is None else R
    return PoseRecord(ds, scene, image, R, geo.t_from_center(R, c))


def _labels(ds: str, scenes: Dict[str, np.ndarray], rng) -> List[PoseRecord]:
    out = []
    for sc, C in scenes.items():
        Rs = geo.random_rotation(rng, len(C))
        out += [_rec(ds, sc, f"{sc}_{i:03d}.png", c, R) for i, (c, R) in enumerate(zip(C, Rs))]
    return out


def _cluster(labels, assign: Dict[str, str], centers: Optional[Dict[str, np.ndarray]] = None):
    """Submission rows: image -> cluster name, centres from ``centers`` (default: the truth)."""
    rows = []
    for r in labels:
        if r.image not in assign:
            continue
        c = centers[r.image] if centers and r.image in centers else geo.camera_center(r.R, r.t)
        rows.append(_rec(r.dataset, assign[r.image], r.image, c, r.R))
    return rows


def _ths(ds, scenes, th=TH):
    return {ds: {sc: list(th) for sc in scenes}}


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
        labels = _labels("ds", scenes, rng)
        names = [r.image for r in labels]
        assign = {im: rng.choice(["a", "b", "c", OUTLIER_SCENE], p=[0.4, 0.3, 0.2, 0.1]) for im in names}
        for im in rng.choice(names, 3, replace=False):
            del assign[im]  # missing rows
        centers = {}
        shift = {c: rng.normal(size=3) * 3 for c in "abc"}
        for r in labels:
            c = geo.camera_center(r.R, r.t) + shift.get(assign.get(r.image), 0) + rng.normal(size=3) * 0.1
            centers[r.image] = np.full(3, np.nan) if rng.random() < 0.15 else c
        sub = _cluster(labels, assign, centers)
        ths = _ths("ds", [s for s in scenes if s != OUTLIER_SCENE])
        ref = _scored_with(monkeypatch, lambda p, g, th, i, s, chunk: register_reference(p, g, th, i, s),
                           labels, sub, ths, cf)
        fast = score_submission(labels, sub, ths, cf)
        assert fast.score == ref.score
        assert fast.datasets["ds"] == ref.datasets["ds"]
        assert _rows(fast.table) == _rows(ref.table)
        assert {k: (v.cluster, v.mAA, v.n_counted) for k, v in fast.scenes.items()} == \
               {k: (v.cluster, v.mAA, v.n_counted) for k, v in ref.scenes.items()}


# ---------------------------------------------------------------- (b) invariance
def test_perfect_submission_under_similarity_scores_one():
    rng = np.random.default_rng(5)
    labels, ths, sub = [], {}, []
    for ds, sizes in {"church": [12, 7], "lizard": [9, 5, 4], "pond": [30]}.items():
        scenes = {f"{ds}_s{k}": rng.normal(size=(m, 3)) * rng.uniform(0.5, 50) for k, m in enumerate(sizes)}
        scenes[OUTLIER_SCENE] = rng.normal(size=(4, 3))
        lab = _labels(ds, scenes, rng)
        labels += lab
        ths.update(_ths(ds, [s for s in scenes if s != OUTLIER_SCENE], th=np.array(TH) * rng.uniform(0.1, 10)))
        for k, sc in enumerate(scenes):
            s, Rs, ts = rng.uniform(0.01, 100), geo.random_rotation(rng), rng.normal(size=3) * 1e3
            for r in lab:
                if r.scene == sc:
                    R, t = geo.apply_similarity(r.R, r.t, s, Rs, ts) if sc != OUTLIER_SCENE else (None, None)
                    sub.append(PoseRecord(ds, f"cluster{k}" if sc != OUTLIER_SCENE else OUTLIER_SCENE, r.image, R, t))
    rng.shuffle(sub)
    res = score_submission(labels, sub, ths)
    assert res.score == 1.0
    for d in res.datasets.values():
        assert (d.score, d.mAA, d.clusterness) == (1.0, 1.0, 1.0)
    assert all(all(r.passed) for r in res.table if r.scene != OUTLIER_SCENE)
    # the metric's alignment undoes the similarity: aligned poses equal the truth
    lab = {r.image: r for r in labels}
    sc = res.scenes[("pond", "pond_s0")]
    q = int(np.argmax(ths["pond"]["pond_s0"]))
    same = sc.registration.alignment(q)  # the public accessor gives the scene's alignment at the largest threshold
    assert same.s == sc.alignment.s and np.array_equal(same.R, sc.alignment.R) and np.array_equal(same.t, sc.alignment.t)
    assert all(sc.registration.alignment(k) is not None for k in range(len(TH)))
    aligned_R, aligned_t = sc.alignment.poses(np.stack([s.R for s in sub if s.image in sc.images]),
                                              np.stack([s.t for s in sub if s.image in sc.images]))
    order = [s.image for s in sub if s.image in sc.images]
    np.testing.assert_allclose(aligned_R, np.stack([lab[i].R for i in order]), atol=1e-9)
    np.testing.assert_allclose(geo.camera_center(aligned_R, aligned_t),
                               np.stack([geo.camera_center(lab[i].R, lab[i].t) for i in order]), atol=1e-6)


# ---------------------------------------------------------------- (c) hand-computed cases
# Thresholds a factor 5 apart. Exact cameras at the corners of a cube, offset cameras near its centre:
# a similarity moving the centre by d moves some corner of every antipodal pair by >= d, so no alignment
# can bring an offset camera under a threshold it misses by 1.5x without losing exact cameras.
TH5 = [0.01, 0.05, 0.1, 0.5, 2.5]
OFFSETS = {8: 0.3, 9: 1.5, 10: 20.0}


def _scene_with_errors(rng, offsets: Dict[int, float]):
    """True centres: 8 cube corners (side 10) then len(offsets) cameras near the centre;
    predicted = truth except camera i moved by offsets[i] (NaN: no pose)."""
    corners = np.array([[x, y, z] for x in (-5, 5) for y in (-5, 5) for z in (-5, 5)], float)
    centre = rng.normal(size=(len(offsets), 3)) * 0.1
    G = np.concatenate([corners, centre]) @ geo.random_rotation(rng).T + rng.normal(size=3) * 10
    X = G.copy()
    for i, d in offsets.items():
        v = rng.normal(size=3)
        X[i] = G[i] + d * v / np.linalg.norm(v) if np.isfinite(d) else np.nan
    return G, X


def test_mAA_counts_minus_three_and_skips_two_smallest():
    rng = np.random.default_rng(0)
    # 11 cameras: 8 exact, one 0.3 off (passes 0.5 and 2.5), one 1.5 off (passes 2.5), one 20 off (never)
    G, X = _scene_with_errors(rng, OFFSETS)
    labels = _labels("ds", {"A": G}, rng)
    sub = _cluster(labels, {r.image: "c" for r in labels}, {f"A_{i:03d}.png": x for i, x in enumerate(X)})
    res = score_submission(labels, sub, _ths("ds", ["A"], th=TH5))
    # registered per threshold: 8, 8, 8, 9, 10; only 0.1, 0.5, 2.5 count, each minus 3
    assert res.scenes[("ds", "A")].n_counted == (8 - 3) + (9 - 3) + (10 - 3)
    assert res.datasets["ds"].mAA == 18 / 24
    assert res.scenes[("ds", "A")].mAA == 18 / 24
    passed = {r.image: r.passed for r in res.table}
    assert passed["A_000.png"] == (True,) * 5
    assert passed["A_008.png"] == (False, False, False, True, True)
    assert passed["A_009.png"] == (False, False, False, False, True)
    assert passed["A_010.png"] == (False,) * 5
    err = {r.image: r.error for r in res.table}  # at the largest threshold's model
    assert err["A_010.png"] == pytest.approx(20.0, rel=0.2) and err["A_000.png"] < 2.5
    # every camera within the thresholds counts, the two smallest thresholds never do
    res = score_submission(labels, _cluster(labels, {r.image: "c" for r in labels}), _ths("ds", ["A"], th=TH5))
    assert res.datasets["ds"].mAA == 1.0
    res = score_submission(labels, sub, _ths("ds", ["A"], th=[1e-9, 1e-9, 0.1, 0.5, 2.5]))
    assert res.datasets["ds"].mAA == 18 / 24


def test_mAA_floor_at_zero_and_pooled_over_scenes():
    rng = np.random.default_rng(1)
    GA, XA = _scene_with_errors(rng, OFFSETS)
    GB = rng.normal(size=(5, 3))
    XB = np.where(np.arange(5)[:, None] < 2, GB, np.nan)  # 2 cameras left: no model
    labels = _labels("ds", {"A": GA, "B": GB}, rng)
    centers = {**{f"A_{i:03d}.png": x for i, x in enumerate(XA)}, **{f"B_{i:03d}.png": x for i, x in enumerate(XB)}}
    sub = _cluster(labels, {r.image: "c" + r.scene for r in labels}, centers)
    res = score_submission(labels, sub, _ths("ds", ["A", "B"], th=TH5))
    assert res.scenes[("ds", "B")].n_counted == 0 and res.scenes[("ds", "B")].mAA == 0.0
    # pooled: (18 + 0) / (3 thresholds * (11 + 5 - 2 * 3))
    assert res.datasets["ds"].mAA == 18 / 30
    assert res.datasets["ds"].clusterness == 1.0
    assert res.datasets["ds"].score == 2 * 0.6 / 1.6


def test_clusterness_is_precision_when_a_cluster_mixes_scenes():
    rng = np.random.default_rng(2)
    labels = _labels("ds", {"A": rng.normal(size=(5, 3)), "B": rng.normal(size=(5, 3))}, rng)
    assign = {f"A_{i:03d}.png": "c1" for i in range(5)}
    assign.update({f"B_{i:03d}.png": "c1" if i < 2 else "c2" for i in range(5)})
    res = score_submission(labels, _cluster(labels, assign), _ths("ds", ["A", "B"]))
    assert (res.scenes[("ds", "A")].cluster, res.scenes[("ds", "B")].cluster) == ("c1", "c2")
    assert res.datasets["ds"].clusterness == (5 + 3) / (7 + 3)
    # perfect poses: A counts 3 x (5 - 3); B has 3 shared cameras, 3 x (3 - 3) = 0; 3 x (5 + 5 - 6) possible
    assert res.datasets["ds"].mAA == 6 / 12
    assert res.datasets["ds"].score == pytest.approx(2 * 0.5 * 0.8 / 1.3, abs=1e-15)


def test_association_is_greedy_per_scene():
    rng = np.random.default_rng(3)
    labels = _labels("ds", {"A": rng.normal(size=(8, 3)) * 5, "B": rng.normal(size=(5, 3))}, rng)
    # A split 4/4 between c1 (poses lost) and c2 (exact): the tie on shared images goes to the higher mAA
    assign = {f"A_{i:03d}.png": "c1" if i < 4 else "c2" for i in range(8)}
    assign.update({f"B_{i:03d}.png": "c1" for i in range(5)})
    centers = {f"A_{i:03d}.png": np.full(3, np.nan) for i in range(4)}
    res = score_submission(labels, _cluster(labels, assign, centers), _ths("ds", ["A", "B"]))
    assert res.scenes[("ds", "A")].cluster == "c2"
    assert res.scenes[("ds", "A")].mAA == 3 * (4 - 3) / (3 * (8 - 3))
    # same rows, but c1's poses exact and c2's lost: now c1 wins the tie
    centers = {f"A_{i:03d}.png": np.full(3, np.nan) for i in range(4, 8)}
    res = score_submission(labels, _cluster(labels, assign, centers), _ths("ds", ["A", "B"]))
    assert res.scenes[("ds", "A")].cluster == "c1"
    # most shared images beats higher mAA: 5 of A in c1 (no poses), 3 in c2 (exact)
    assign = {f"A_{i:03d}.png": "c1" if i < 5 else "c2" for i in range(8)}
    assign.update({f"B_{i:03d}.png": "c3" for i in range(5)})
    centers = {f"A_{i:03d}.png": np.full(3, np.nan) for i in range(5)}
    res = score_submission(labels, _cluster(labels, assign, centers), _ths("ds", ["A", "B"]))
    assert res.scenes[("ds", "A")].cluster == "c1" and res.scenes[("ds", "A")].mAA == 0.0
    # not one-to-one: both scenes take the one cluster holding everything; its size counts twice
    res = score_submission(labels, _cluster(labels, {r.image: "all" for r in labels}), _ths("ds", ["A", "B"]))
    assert {res.scenes[("ds", s)].cluster for s in "AB"} == {"all"}
    assert res.datasets["ds"].clusterness == (8 + 5) / (13 + 13)


def test_outliers_cluster_and_outlier_images():
    rng = np.random.default_rng(4)
    scenes = {"A": rng.normal(size=(6, 3)), OUTLIER_SCENE: rng.normal(size=(3, 3))}
    labels = _labels("ds", scenes, rng)
    th = _ths("ds", ["A"])
    # outlier images kept out of the scene's cluster: perfect
    assign = {r.image: ("c" if r.scene == "A" else OUTLIER_SCENE) for r in labels}
    res = score_submission(labels, _cluster(labels, assign), th)
    assert (res.score, res.datasets["ds"].clusterness) == (1.0, 1.0)
    # outlier images put into the scene's cluster lower clusterness only
    assign = {r.image: "c" for r in labels}
    res = score_submission(labels, _cluster(labels, assign), th)
    assert res.datasets["ds"].clusterness == 6 / 9 and res.datasets["ds"].mAA == 1.0
    # an 'outliers' cluster is never associated, even holding most of the scene
    assign = {f"A_{i:03d}.png": OUTLIER_SCENE if i < 4 else "c" for i in range(6)}
    assign.update({f"outliers_{i:03d}.png": OUTLIER_SCENE for i in range(3)})
    res = score_submission(labels, _cluster(labels, assign), th)
    assert res.scenes[("ds", "A")].cluster == "c"
    assert res.scenes[("ds", "A")].n_shared == 2 and res.datasets["ds"].mAA == 0.0
    assert res.datasets["ds"].clusterness == 1.0


def test_missing_rows_count_as_outliers():
    rng = np.random.default_rng(6)
    labels = _labels("ds", {"A": rng.normal(size=(8, 3)) * 4}, rng)
    assign = {f"A_{i:03d}.png": "c" for i in range(6)}  # two images without a row
    res = score_submission(labels, _cluster(labels, assign), _ths("ds", ["A"]))
    assert res.scenes[("ds", "A")].n_shared == 6
    assert res.datasets["ds"].mAA == 3 * (6 - 3) / (3 * (8 - 3))
    rows = {r.image: r for r in res.table}
    assert rows["A_007.png"].cluster is None and not any(rows["A_007.png"].passed)


def test_harmonic_mean_per_dataset_and_mean_over_datasets():
    rng = np.random.default_rng(8)
    lab1 = _labels("d1", {"A": rng.normal(size=(5, 3)), "B": rng.normal(size=(5, 3))}, rng)
    assign = {f"A_{i:03d}.png": "c1" for i in range(5)}
    assign.update({f"B_{i:03d}.png": "c1" if i < 2 else "c2" for i in range(5)})
    sub1 = _cluster(lab1, assign)
    lab2 = _labels("d2", {"X": rng.normal(size=(7, 3))}, rng)
    sub2 = _cluster(lab2, {r.image: "k" for r in lab2})
    ths = {**_ths("d1", ["A", "B"]), **_ths("d2", ["X"])}
    res = score_submission(lab1 + lab2, sub1 + sub2, ths)
    s1 = 2 * 0.5 * 0.8 / (0.5 + 0.8)
    assert res.datasets["d1"].score == pytest.approx(s1, abs=1e-15)
    assert res.datasets["d2"].score == 1.0
    assert res.score == pytest.approx((s1 + 1.0) / 2, abs=1e-15)
    # a dataset absent from the submission scores 0 and still counts in the mean
    res = score_submission(lab1 + lab2, sub2, ths)
    assert res.datasets["d1"].score == 0.0 and res.score == 0.5


def test_no_shared_image_falls_on_first_cluster():
    """As the official argmax over an all-zero row: the first cluster's size joins the denominator."""
    rng = np.random.default_rng(9)
    labels = _labels("ds", {"A": rng.normal(size=(5, 3)), "B": rng.normal(size=(4, 3))}, rng)
    assign = {f"A_{i:03d}.png": "c1" for i in range(5)}
    assign.update({f"B_{i:03d}.png": OUTLIER_SCENE for i in range(4)})
    res = score_submission(labels, _cluster(labels, assign), _ths("ds", ["A", "B"]))
    assert res.scenes[("ds", "B")].cluster == "c1" and res.scenes[("ds", "B")].n_shared == 0
    assert res.datasets["ds"].clusterness == 5 / 10
    assert res.datasets["ds"].mAA == 3 * 2 / (3 * (5 + 4 - 6))
