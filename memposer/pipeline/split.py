"""Stage 8b: split a model whose parts were joined on duplicate (symmetric) structure.

A landmark that repeats every quarter turn (a pedestal, a star fort) gives verified pairs between
views from different sides; a few of them can join two groups of cameras into one model with the
second group turned by the symmetry. Each group is right inside, but the model then holds the
repeated structure twice, in the same place, seen by two groups of cameras that do not see each
other's points (Heinly et al. 2014, "Correcting for duplicate scene structure"). That is the test:

- for a pair of cameras ``i``, ``j``: the points ``i`` observes that project into ``j``'s image, in
  front of it, seen by ``j`` from within ``max_view_angle`` of ``i``'s ray and at a distance within
  ``max_scale`` of ``i``'s (``j`` would see the same surface at a similar scale). Each is
  ``observed`` when ``j`` observes it too, and a conflict when ``j`` does not but observes another
  point at that pixel (within half the spacing of its points) that is not in front of it: two
  surfaces in one place. Where ``j`` sees nothing there, or something in front (an occluder), the
  point says nothing. ``expected`` = observed + conflicts.
- Candidate splits: removing one edge of the maximum spanning tree of the co-visibility graph
  (cameras linked by shared points), with at least ``min_size`` cameras on each side.
- A candidate is a duplicate join when, over the camera pairs across it, observed / expected is
  below ``ratio`` times the same ratio over the pairs within its two sides, with at least
  ``min_expected`` expected points across (evidence, not noise). The worst such split is made, and
  each side is checked again; when no cut fails, single cameras are tested against the rest of
  their part the same way (``singles``: an image registered alone on the repeated structure).

In a right model, cameras that view the same surface from near the same place observe a similar
share of each other's points wherever the cut runs; across a duplicate join they observe only the
points of the repeated structure and see their own copy of the rest in its place. ``ratio`` is
relative to the model's own repeatability, so it does not depend on the keypoint budget; 0.5 lies
between the right models measured (lowest cut 0.85-0.94 of the within share on rendered
``benchmark_cpu`` models, 0.82-0.89 on hand-built ones) and the joins (0.001-0.24; docs/results.md).

:func:`bridging_pairs` names the image pairs that hold a split model together (they share
points across the split): ``reconstruction`` drops them from a copy of the database and maps the
cluster again (``remap``), so that true links, if any, can place the parts correctly.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import networkx as nx
import numpy as np
import pycolmap

from memposer.pipeline import seeding

log = logging.getLogger(__name__)

default_conf = {
    "enabled": False,
    "max_view_angle": 30.0,  # degrees between the two cameras' rays to a point for it to count as visible
    "max_scale": 2.0,  # ratio of the two cameras' distances to the point
    "depth_margin": 0.9,  # an unobserved point conflicts where the camera sees a point at >= this x its depth
    "neighbours": 30,  # cameras compared with each camera (nearest centres in the model)
    "min_expected": 50,  # expected points across a split before it can be judged
    "ratio": 0.5,  # split when the across share falls below this x the within share
    "min_size": 3,  # cameras on each side of a split
    "singles": True,  # then single cameras that fail against the rest of their part are taken out
    "remap": True,  # drop the pairs that bridged a split and map the cluster again
    "agree": 0.5,  # a bridging pair: this share of its inlier matches are tracks of the model
    "max_rounds": 2,  # remaps at most
}


@dataclass
class Views:
    """A reconstruction as arrays: cameras (world-to-camera), intrinsics, points and who sees them."""

    names: List[str]
    image_ids: List[int]
    R: np.ndarray  # (N, 3, 3)
    t: np.ndarray  # (N, 3)
    K: np.ndarray  # (N, 3, 3)
    size: np.ndarray  # (N, 2) width, height
    xyz: np.ndarray  # (P, 3)
    seen: np.ndarray  # (N, P) bool: image observes point

    @property
    def centres(self) -> np.ndarray:
        return -np.einsum("nji,nj->ni", self.R, self.t)


def views_of(rec: pycolmap.Reconstruction) -> Views:
    """The registered images of ``rec`` and its points as :class:`Views`."""
    ids = sorted(i for i, im in rec.images.items() if im.has_pose)
    index = {i: k for k, i in enumerate(ids)}
    pids = sorted(rec.point3D_ids())
    seen = np.zeros((len(ids), len(pids)), bool)
    for p, pid in enumerate(pids):
        for e in rec.points3D[pid].track.elements:
            if e.image_id in index:
                seen[index[e.image_id], p] = True
    poses = [rec.images[i].cam_from_world() for i in ids]
    cams = [rec.cameras[rec.images[i].camera_id] for i in ids]
    return Views(
        names=[rec.images[i].name for i in ids], image_ids=ids,
        R=np.array([p.rotation.matrix() for p in poses], np.float64).reshape(-1, 3, 3),
        t=np.array([p.translation for p in poses], np.float64).reshape(-1, 3),
        K=np.array([c.calibration_matrix() for c in cams], np.float64).reshape(-1, 3, 3),
        size=np.array([(c.width, c.height) for c in cams], np.float64).reshape(-1, 2),
        xyz=np.array([rec.points3D[p].xyz for p in pids], np.float64).reshape(-1, 3), seen=seen)


def pair_evidence(v: Views, conf: dict) -> Tuple[np.ndarray, np.ndarray]:
    """``(expected, observed)``, (N, N) each, symmetric: points one camera of a pair observes that
    the other should see and either does observe or contradicts (see the module doc), and how
    many of those it observes."""
    n = len(v.names)
    C = v.centres
    expected, observed = np.zeros((n, n)), np.zeros((n, n))
    cos_max = np.cos(np.deg2rad(conf["max_view_angle"]))
    d = np.linalg.norm(C[:, None] - C[None], axis=-1)
    own = [_own_points(v, j) for j in range(n)]
    for i in range(n):
        pts = np.flatnonzero(v.seen[i])
        if not len(pts):
            continue
        X = v.xyz[pts]
        ri = X - C[i]
        di = np.linalg.norm(ri, axis=1)
        for j in np.argsort(d[i])[1:int(conf["neighbours"]) + 1]:
            if own[j] is None:
                continue
            uv, z = _project(v, j, X)
            inside = (z > 0) & np.all((uv >= 0) & (uv < v.size[j]), axis=1)
            rj = X - C[j]
            dj = np.linalg.norm(rj, axis=1)
            cos = np.einsum("pk,pk->p", ri, rj) / np.maximum(di * dj, 1e-12)
            scale = dj / np.maximum(di, 1e-12)
            vis = inside & (cos >= cos_max) & (scale <= conf["max_scale"]) & (scale >= 1 / conf["max_scale"])
            seen = vis & v.seen[j, pts]
            # Unobserved: a conflict only where j observes another point there that is not in front
            # of this one (two surfaces in one place); an occluder in front, or nothing, says nothing.
            tree, depth, radius = own[j]
            dist, k = tree.query(uv[vis & ~seen], distance_upper_bound=radius)
            near = np.isfinite(dist)
            conflict = (depth[k[near]] >= conf["depth_margin"] * z[vis & ~seen][near]).sum()
            expected[i, j] += seen.sum() + conflict
            observed[i, j] += seen.sum()
    return expected + expected.T, observed + observed.T


def _project(v: Views, j: int, X: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Pixels ``(P, 2)`` and depths ``(P,)`` of points ``X`` in camera ``j`` (pinhole)."""
    uvw = (X @ v.R[j].T + v.t[j]) @ v.K[j].T
    z = uvw[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return uvw[:, :2] / z[:, None], z


def _own_points(v: Views, j: int):
    """A KD-tree of camera ``j``'s observed points in its image, their depths, and the search radius:
    half the typical spacing of those points (``sqrt(area / count) / 2``)."""
    from scipy.spatial import cKDTree

    pts = np.flatnonzero(v.seen[j])
    if not len(pts):
        return None
    uv, z = _project(v, j, v.xyz[pts])
    return cKDTree(uv), z, 0.5 * np.sqrt(v.size[j, 0] * v.size[j, 1] / len(pts))


@dataclass
class Split:
    part: List[int]  # camera indices on one side (the other side is the rest)
    across: float  # observed / expected across the split
    within: float  # observed / expected inside its two sides
    expected: float  # expected points across


def find_split(v: Views, conf: dict, cams: Optional[Sequence[int]] = None,
               evidence: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Optional[Split]:
    """The most inconsistent spanning-tree cut of cameras ``cams`` (default all) that fails the test,
    or None; ``evidence``: :func:`pair_evidence` of all of ``v``'s cameras, when already computed."""
    cams = list(range(len(v.names))) if cams is None else list(cams)
    if len(cams) < 2 * conf["min_size"]:
        return None
    expected, observed = evidence if evidence is not None else pair_evidence(v, conf)
    expected, observed = expected[np.ix_(cams, cams)], observed[np.ix_(cams, cams)]
    tree = _covisibility_tree(v.seen[cams])
    best: Optional[Split] = None
    for a, b in list(tree.edges):
        tree.remove_edge(a, b)
        side = np.zeros(len(cams), bool)
        side[list(nx.node_connected_component(tree, a))] = True
        tree.add_edge(a, b)
        if min(side.sum(), (~side).sum()) < conf["min_size"]:
            continue
        s = _judge(side, expected, observed, conf, cams)
        if s is not None and (best is None or s.across / s.within < best.across / best.within):
            best = s
    return best


def find_single(v: Views, conf: dict, cams: Sequence[int], evidence: Tuple[np.ndarray, np.ndarray]) -> Optional[Split]:
    """The one camera of ``cams`` that fails the test against all the others (an image registered
    alone on the repeated structure), the worst if several; None if none fails."""
    cams = list(cams)
    if len(cams) < 1 + conf["min_size"]:
        return None
    expected, observed = evidence[0][np.ix_(cams, cams)], evidence[1][np.ix_(cams, cams)]
    best: Optional[Split] = None
    for k in range(len(cams)):
        side = np.zeros(len(cams), bool)
        side[k] = True
        s = _judge(side, expected, observed, conf, cams)
        if s is not None and (best is None or s.across / s.within < best.across / best.within):
            best = s
    return best


def _judge(side: np.ndarray, expected: np.ndarray, observed: np.ndarray, conf: dict,
           cams: List[int]) -> Optional[Split]:
    """The cut ``side`` / rest as a :class:`Split` if it fails the test, else None."""
    cross = side[:, None] != side[None]
    e_x, o_x = expected[cross].sum() / 2, observed[cross].sum() / 2
    e_w, o_w = expected[~cross].sum() / 2, observed[~cross].sum() / 2
    if e_x < conf["min_expected"] or e_w <= 0 or o_w <= 0 or o_x / e_x >= conf["ratio"] * o_w / e_w:
        return None
    return Split([cams[k] for k in np.flatnonzero(side)], o_x / e_x, o_w / e_w, e_x)


def _covisibility_tree(seen: np.ndarray) -> nx.Graph:
    shared = seen.astype(np.float64) @ seen.T.astype(np.float64)
    g = nx.Graph()
    g.add_nodes_from(range(len(seen)))
    ii, jj = np.nonzero(np.triu(shared, 1))
    g.add_weighted_edges_from((int(i), int(j), float(shared[i, j])) for i, j in zip(ii, jj))
    return nx.maximum_spanning_tree(g)


def split_parts(v: Views, conf: dict) -> Tuple[List[List[int]], List[Split]]:
    """Camera index groups after splitting recursively until no cut fails (then, with ``singles``,
    single cameras that fail are taken out one at a time); and the splits made."""
    evidence = pair_evidence(v, conf)
    todo, parts, made = [list(range(len(v.names)))], [], []
    while todo:
        cams = todo.pop()
        s = find_split(v, conf, cams, evidence)
        if s is None and conf["singles"]:
            s = find_single(v, conf, cams, evidence)
        if s is None:
            parts.append(cams)
            continue
        made.append(s)
        side = set(s.part)
        todo += [[c for c in cams if c in side], [c for c in cams if c not in side]]
    return sorted(parts, key=lambda p: (-len(p), p)), made


def bridging_pairs(rec: pycolmap.Reconstruction, v: Views, parts: List[List[int]],
                   database_path: Optional[str] = None, agree: float = 0.5) -> Set[Tuple[str, str]]:
    """Image pairs in different parts that made the join: they observe a common point and (with
    ``database_path``, the database ``rec`` was mapped from) at least ``agree`` of their verified
    inlier matches are observations of one point in ``rec``. A true link across the parts disagrees
    with the false join, so its matches do not form the model's tracks, and it stays for the next
    mapping."""
    of = np.empty(len(v.names), int)
    for k, p in enumerate(parts):
        of[p] = k
    shared = v.seen.astype(np.float64) @ v.seen.T.astype(np.float64)
    ii, jj = np.nonzero(np.triu(shared, 1))
    cross = [(i, j) for i, j in zip(ii, jj) if of[i] != of[j]]
    if database_path is None:
        return {tuple(sorted((v.names[i], v.names[j]))) for i, j in cross}
    out = set()
    db = pycolmap.Database.open(str(database_path))
    try:
        for i, j in cross:
            a, b = v.image_ids[i], v.image_ids[j]
            if not db.exists_two_view_geometry(a, b):
                continue
            m = np.asarray(db.read_two_view_geometry(a, b).inlier_matches).reshape(-1, 2)
            pa = np.array([p.point3D_id if p.has_point3D() else -1 for p in rec.images[a].points2D])
            pb = np.array([p.point3D_id if p.has_point3D() else -2 for p in rec.images[b].points2D])
            if len(m) and (pa[m[:, 0]] == pb[m[:, 1]]).mean() >= agree:
                out.add(tuple(sorted((v.names[i], v.names[j]))))
    finally:
        db.close()
    return out


Remapper = Callable[[Set[Tuple[str, str]], int], List[pycolmap.Reconstruction]]


def check_models(models: List[pycolmap.Reconstruction], conf: dict, remap: Optional[Remapper] = None,
                 database_path: Optional[str] = None) -> Tuple[List[pycolmap.Reconstruction], Dict[str, float]]:
    """``models`` with every duplicate join split, largest first, and counts for the run's stats.

    With ``remap`` (and ``conf["remap"]``), the pairs that bridged the splits are dropped and the
    cluster mapped again (``remap(dropped pairs so far, round)``), at most ``max_rounds`` times: a
    true link that the false join had pushed out can then place the parts, and the check runs again
    on the new models. Whatever the last round leaves unresolved stays split.
    """
    dropped: Set[Tuple[str, str]] = set()
    stats = {"split_made": 0.0, "split_rounds": 0.0, "split_dropped_pairs": 0.0}
    for rnd in range(int(conf["max_rounds"]) + 1):
        out, bridges = [], set()
        for rec in models:
            v = views_of(rec)
            parts, made = split_parts(v, conf)
            if not made:
                out.append(rec)
                continue
            for s in made:
                log.info("split: %d of %d cameras apart (observed share across %.3f, within %.3f, %d expected)",
                         len(s.part), len(v.names), s.across, s.within, s.expected)
            stats["split_made"] += len(made)
            bridges |= bridging_pairs(rec, v, parts, database_path, conf["agree"])
            out += [seeding.restrict(rec, {v.names[k] for k in p}) for p in parts]
        out.sort(key=lambda r: -r.num_reg_images())
        if not bridges - dropped or remap is None or not conf["remap"] or rnd == int(conf["max_rounds"]):
            stats["split_dropped_pairs"] = float(len(dropped))
            return out, stats
        dropped |= bridges
        stats["split_rounds"] += 1
        models = remap(dropped, rnd)
    return out, stats  # not reached
