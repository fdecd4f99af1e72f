"""Splitting models joined on duplicate structure (pipeline/split.py), on hand-built pycolmap models
of a square tower, which looks the same every quarter turn."""
import numpy as np
import pycolmap
import pytest

from memposer import colmap
from memposer.pipeline import split
from pycolmap_scenes import synthetic_database  # tests/pipeline/pycolmap_scenes.py

W, H, F = 640, 480, 500.0


def _tower(rng, per_face=150):
    """Points on the four faces of a 2 x 2 x 4 tower (centre at the origin) and each face's normal."""
    pts, normals = [], []
    for k in range(4):
        a = k * np.pi / 2
        n = np.array([np.cos(a), np.sin(a), 0.0])
        s = np.array([-np.sin(a), np.cos(a), 0.0])
        u, z = rng.uniform(-1, 1, per_face), rng.uniform(-2, 2, per_face)
        pts.append(n + u[:, None] * s + z[:, None] * [0, 0, 1])
        normals.append(np.repeat(n[None], per_face, 0))
    return np.concatenate(pts), np.concatenate(normals)


def _look_at(angle, radius=8.0):
    """World-to-camera (R, t) of a camera on a ring at ``angle`` (radians) looking at the tower."""
    c = np.array([radius * np.cos(angle), radius * np.sin(angle), 0.5])
    z = -c / np.linalg.norm(c)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    R = np.stack([x, np.cross(z, x), z])
    return R, -R @ c


def _rz(a):
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def _observe(X, N, K, angle, rng, keep_share):
    """Camera at ``angle`` looking at the tower: (R, t, pixel positions of all points, indices it sees)."""
    R, t = _look_at(angle)
    Xc = X @ R.T + t
    uv = Xc @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    facing = np.einsum("pk,pk->p", N, -(X + R.T @ t)) / np.linalg.norm(X + R.T @ t, axis=1) > 0.3
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (Xc[:, 2] > 0)
    return R, t, uv, np.flatnonzero(facing & inside & (rng.random(len(X)) < keep_share))


def _model(angles, placed, rng, bridge=0):
    """A model of cameras truly at ``angles`` placed at ``placed`` (the same = a right model), each
    observing the tower points it faces (70% detected); points seen by cameras whose placement differs
    from the truth by a turn are placed by that turn, as a mapper would triangulate them. ``bridge``
    points are shared by the first camera of each placement group (false matches that joined them)."""
    X, N = _tower(rng)
    K = np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]])
    rec = pycolmap.Reconstruction()
    cam = colmap.make_camera(W, H, F, "PINHOLE")
    cam.camera_id = 1
    rec.add_camera_with_trivial_rig(cam)
    obs = {}  # (turn, point) -> [(image_id, point2D index)]
    firsts = {}  # turn -> (image_id, index of its first bridge keypoint)
    for i, (a, p) in enumerate(zip(angles, placed)):
        R, t, uv, keep = _observe(X, N, K, a, rng, 0.7)
        turn = round((p - a) / (np.pi / 2)) % 4
        kp = uv[keep] + rng.normal(0, 0.5, (len(keep), 2))
        if turn not in firsts:  # room for the bridge's keypoints
            firsts[turn] = (i + 1, len(kp))
            kp = np.concatenate([kp, rng.uniform(0, H, (bridge, 2))])
        Rp, tp = _look_at(p)
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"im{i:02d}.jpg", keypoints=kp, camera_id=1, image_id=i + 1),
                                         pycolmap.Rigid3d(pycolmap.Rotation3d(Rp), tp))
        for k, pt in enumerate(keep):
            obs.setdefault((turn, pt), []).append((i + 1, k))
    for (turn, pt), els in obs.items():
        if len(els) >= 2:
            rec.add_point3D(_rz(turn * np.pi / 2) @ X[pt], pycolmap.Track([pycolmap.TrackElement(*e) for e in els]),
                            np.zeros(3, np.uint8))
    if len(firsts) == 2:
        (i, ki), (j, kj) = firsts.values()
        for b in range(bridge):  # false matches: one point seen by the first camera of each group
            rec.add_point3D(X[rng.integers(len(X))], pycolmap.Track([pycolmap.TrackElement(i, ki + b),
                                                                     pycolmap.TrackElement(j, kj + b)]),
                            np.zeros(3, np.uint8))
    return rec


def _ring(lo, hi, n):
    return list(np.deg2rad(np.linspace(lo, hi, n)))


def test_right_model_is_not_split():
    rng = np.random.default_rng(0)
    a = _ring(0, 345, 24)  # the whole way round: every cut has neighbours on both sides
    v = split.views_of(_model(a, a, rng))
    parts, made = split.split_parts(v, split.default_conf)
    assert made == [] and len(parts) == 1 and len(parts[0]) == 24


def test_quarter_turn_join_is_split_into_its_groups():
    rng = np.random.default_rng(0)
    # 10 cameras truly at 0-60 deg, 10 truly at 90-150 deg but placed a quarter turn back onto 0-60:
    # the tower looks the same, so each group alone is right and together they hold two towers in one
    true = _ring(0, 60, 10) + _ring(90, 150, 10)
    placed = _ring(0, 60, 10) + list(np.array(_ring(90, 150, 10)) - np.pi / 2)
    rec = _model(true, placed, rng, bridge=15)
    v = split.views_of(rec)
    parts, made = split.split_parts(v, split.default_conf)
    assert len(made) == 1 and made[0].across < 0.05 < made[0].within
    assert sorted(sorted(v.names[k] for k in p) for p in parts) == sorted(
        [[f"im{i:02d}.jpg" for i in range(10)], [f"im{i:02d}.jpg" for i in range(10, 20)]])


def test_check_models_drops_the_bridges_and_remaps():
    rng = np.random.default_rng(1)
    true = _ring(0, 60, 10) + _ring(90, 150, 10)
    placed = _ring(0, 60, 10) + list(np.array(_ring(90, 150, 10)) - np.pi / 2)
    rec = _model(true, placed, rng, bridge=15)
    right = _model(true, true, np.random.default_rng(2))
    calls = []

    def remap(dropped, rnd):
        calls.append((set(dropped), rnd))
        return [right]  # the mapper without the bridges places the groups right

    out, stats = split.check_models([rec], split.default_conf, remap)
    assert calls == [({("im00.jpg", "im10.jpg")}, 0)]  # the one pair that shared points across
    assert len(out) == 1 and out[0].num_reg_images() == 20 and stats["split_made"] == 1
    out, _ = split.check_models([rec], {**split.default_conf, "remap": False}, remap)
    assert sorted(r.num_reg_images() for r in out) == [10, 10] and len(calls) == 1
    # restricted models keep only points two of their own cameras see
    for r in out:
        names = {r.images[i].name for i in r.reg_image_ids()}
        for p in r.points3D.values():
            assert len({e.image_id for e in p.track.elements}) >= 2
            assert all(r.images[e.image_id].name in names for e in p.track.elements)


def test_database_without_pairs_drops_only_those(tmp_path):
    opts = pycolmap.SyntheticDatasetOptions()
    opts.num_frames_per_rig, opts.num_points3D = 5, 100
    db_path = tmp_path / "db.db"
    db = pycolmap.Database.open(str(db_path))
    pycolmap.set_random_seed(0)
    pycolmap.synthesize_dataset(opts, db)
    names = sorted(im.name for im in db.read_all_images())
    db.close()
    out = colmap.database_without_pairs(db_path, tmp_path / "copy.db", [(names[0], names[1])])
    a, b = pycolmap.Database.open(str(db_path)), pycolmap.Database.open(str(out))
    try:
        assert b.num_verified_image_pairs() == a.num_verified_image_pairs() - 1
        i0, i1 = (b.read_image_with_name(n).image_id for n in names[:2])
        assert not b.exists_two_view_geometry(i0, i1) and a.exists_two_view_geometry(i0, i1)
    finally:
        a.close()
        b.close()


def test_mapped_right_scene_is_left_whole(tmp_path):
    """pycolmap's mapper on a synthetic scene (exact matches, noise): the check splits nothing, and
    the cluster comes out as without it."""
    from memposer.pipeline import reconstruction as rc

    db_path = tmp_path / "scene.db"
    truth = synthetic_database(db_path, num_images=15, num_points=400, pixel_noise=0.5)
    names = sorted(im.name for im in truth.images.values())
    conf = {**rc.default_conf, "num_threads": 1, "workers": 1, "write_models": False, "mapper": "incremental"}
    plain = rc.reconstruct_cluster(names, db_path, tmp_path, tmp_path / "plain", conf)
    checked = rc.reconstruct_cluster(names, db_path, tmp_path, tmp_path / "checked",
                                     {**conf, "split": {**split.default_conf, "enabled": True}})
    assert [len(m) for m in checked.models] == [len(m) for m in plain.models] == [15]
    assert checked.stats["split_made"] == 0 and checked.stats["split_rounds"] == 0


def _symmetric_tower_database(tmp_path, rng, per_face=40, statue=600):
    """A database of 16 views of a tower whose four faces are the same (one face's points turned by
    quarter turns) under a statue that is not: 8 cameras truly at 0-60 deg, 8 at 90-150 deg. Pairs within a group have all
    their true matches; pairs across have a third of them (a wide baseline loses most), and those
    whose views look alike after a quarter turn have the symmetric matches too, more of them than
    true ones (what a matcher finds on repeated structure). Returns the path, names and true poses."""
    q = np.stack([np.ones(per_face), rng.uniform(-1, 1, per_face), rng.uniform(-2, 2, per_face)], 1)
    X = np.concatenate([q @ _rz(k * np.pi / 2).T for k in range(4)])
    N = np.concatenate([np.repeat(_rz(k * np.pi / 2)[:, :1].T, per_face, 0) for k in range(4)])
    # a statue on top, not symmetric: points on a cylinder above the tower, each facing out
    phi = rng.uniform(0, 2 * np.pi, statue)
    ring = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], 1)
    X = np.concatenate([X, 0.6 * ring + np.stack([0 * phi, 0 * phi, rng.uniform(2, 3.5, len(phi))], 1)])
    N = np.concatenate([N, ring])
    K = np.array([[F / 2, 0, W / 2], [0, F / 2, H / 2], [0, 0, 1]])
    angles = _ring(0, 60, 8) + _ring(90, 150, 8)
    db = colmap.Database(tmp_path / "tower.db")
    index, kps, names, truth = [], [], [], {}
    for i, a in enumerate(angles):
        R, t, uv, keep = _observe(X, N, K, a, rng, 0.8)
        index.append({int(p): k for k, p in enumerate(keep)})
        kps.append(uv[keep] + rng.normal(0, 0.3, (len(keep), 2)))
        names.append(f"im{i:02d}.jpg")
        truth[names[-1]] = (R, t)
        db.add_image(names[-1], W, H, kps[-1], F / 2, "SIMPLE_RADIAL")
    opts = colmap.two_view_options({"seed": 0})
    for i in range(16):
        for j in range(i + 1, 16):
            true = [(index[i][p], index[j][p]) for p in index[i] if p in index[j]]
            if (i < 8) != (j < 8):
                true = [m for m in true if rng.random() < 0.1]
                b, a = (angles[j], angles[i]) if j >= 8 else (angles[i], angles[j])
                if abs(np.rad2deg(b - np.pi / 2 - a)) < 20:  # alike after a quarter turn: symmetric matches
                    shift = lambda p: (p + per_face) % (4 * per_face)  # noqa: E731 (face k -> k + 1)
                    ia, ib = (i, j) if j >= 8 else (j, i)
                    sym = [(index[ia][p], index[ib][shift(p)]) for p in index[ia] if p < 4 * per_face and shift(p) in index[ib]]
                    sym = sym if ia == i else [(y, x) for x, y in sym]
                    true = true[:len(sym) // 2] + sym
            if len(true) >= 15:
                m = np.array(true)
                db.write_pair(names[i], names[j], m, db.estimate_pair(names[i], names[j], m, kps[i], kps[j], opts))
    db.close()
    return tmp_path / "tower.db", names, truth


def _rotation_errors(model, truth):
    """Degrees between each image's rotation and the truth, after the best global rotation."""
    names = sorted(model)
    M = sum(truth[n][0].T @ model[n][0] for n in names)
    U, _, Vt = np.linalg.svd(M)
    G = U @ np.diag([1, 1, np.linalg.det(U @ Vt)]) @ Vt
    return {n: np.rad2deg(np.arccos(np.clip((np.trace(truth[n][0] @ G @ model[n][0].T) - 1) / 2, -1, 1)))
            for n in names}


def test_symmetric_tower_join_is_split_by_the_mapper_check(tmp_path):
    """The real mapper joins the two groups a quarter turn apart through the symmetric matches; with
    the check, the bridging pairs are dropped and the cluster mapped again until no model holds
    the tower twice: every model that comes out is right, and no image is lost."""
    from memposer.pipeline import reconstruction as rc

    db_path, names, truth = _symmetric_tower_database(tmp_path, np.random.default_rng(0))
    # the check works on the incremental mapper's models (checks.check_choices refuses it with the
    # others: the refined global model of this join is 25 deg off and shows no cut)
    conf = {**rc.default_conf, "num_threads": 1, "workers": 1, "write_models": False, "mapper": "incremental"}
    plain = rc.reconstruct_cluster(names, db_path, tmp_path, tmp_path / "plain", conf)
    assert [len(m) for m in plain.models] == [16]
    assert np.median(list(_rotation_errors(plain.models[0], truth).values())) > 30  # two groups 90 deg apart

    checked = rc.reconstruct_cluster(names, db_path, tmp_path, tmp_path / "checked",
                                     {**conf, "split": {**split.default_conf, "enabled": True}})
    assert checked.stats["split_made"] >= 1 and checked.stats["split_rounds"] >= 1
    assert sum(map(len, checked.models)) == 16 and len(checked.models) >= 2
    for m in checked.models:
        assert max(_rotation_errors(m, truth).values()) < 3
