"""Seeded reconstruction: predicted poses initialise COLMAP, geometry refines them.

Given a COLMAP database holding keypoints and verified two-view geometries (what the matching and
verification stages write) and a world-to-camera pose per image (from MemPoser, in any gauge), this
builds a ``pycolmap.Reconstruction`` with those poses, triangulates tracks with tolerances loose
enough for the seed's error, bundle-adjusts with a robust loss, filters, re-triangulates with
COLMAP's usual tolerances, refines again, and finally tries to register images the seed left out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycolmap

from memposer.colmap import poses_of
from memposer.geometry import vector_angle

log = logging.getLogger(__name__)

default_conf = {
    "min_num_matches": 15,
    "seed_max_angle_error": 8.0,  # degrees; triangulation tolerance for the first, seeded pass
    "seed_loss_scale": 4.0,  # pixels; Cauchy loss scale of the first bundle adjustment
    "num_rounds": 3,  # loose -> strict alternations of triangulation and bundle adjustment
    "filter_max_reproj_error": 4.0,
    "register_missing": True,
    "refine_focal_length": True,
    "num_threads": 1,
    "seed": 0,
    # A seeded model replaces a mapper model only where it registers more images, or the same images
    # with at least this share of its observations at no more than this multiple of its reprojection
    # error: 1.0 / 1.0 means never on a tie it does not win (docs/results.md, "Seeds that never lose";
    # the looser 0.9 / 1.5 + 0.5 px let a model 92 deg off replace a right one)
    "keep_min_observation_ratio": 1.0,
    "keep_max_reproj_ratio": 1.0,
}


@dataclass
class SeedResult:
    reconstruction: Optional[pycolmap.Reconstruction]
    stats: Dict[str, float] = field(default_factory=dict)


def _mapper_options(conf: dict) -> pycolmap.IncrementalMapperOptions:
    opts = pycolmap.IncrementalMapperOptions()
    opts.filter_max_reproj_error = conf["filter_max_reproj_error"]
    opts.num_threads = conf["num_threads"]
    opts.random_seed = conf["seed"]
    return opts


def _tri_options(conf: dict, max_angle_error: Optional[float] = None) -> pycolmap.IncrementalTriangulatorOptions:
    opts = pycolmap.IncrementalTriangulatorOptions()
    if max_angle_error is not None:
        opts.create_max_angle_error = max_angle_error
        opts.continue_max_angle_error = max_angle_error
        opts.re_max_angle_error = max(max_angle_error, opts.re_max_angle_error)
        opts.merge_max_reproj_error = opts.complete_max_reproj_error = 4.0 * max_angle_error
    opts.random_seed = conf["seed"]
    return opts


def _ba_options(conf: dict, robust_scale: Optional[float]) -> pycolmap.BundleAdjustmentOptions:
    opts = pycolmap.BundleAdjustmentOptions()
    opts.refine_focal_length = conf["refine_focal_length"]
    opts.refine_principal_point = False
    opts.refine_extra_params = conf["refine_focal_length"]
    opts.print_summary = False
    if robust_scale is not None:
        opts.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        opts.ceres.loss_function_scale = robust_scale
    opts.ceres.solver_options.num_threads = conf["num_threads"]
    return opts


def build_seeded_reconstruction(cache: pycolmap.DatabaseCache, names: Sequence[str],
                                R: np.ndarray, t: np.ndarray) -> pycolmap.Reconstruction:
    """The database's cameras, rigs and frames, with the given world-to-camera poses registered.

    Ids stay the database's so that the mapper's correspondence graph applies unchanged.
    """
    rec = pycolmap.Reconstruction()
    rec.load(cache)
    for name, Ri, ti in zip(names, R, t):
        image = rec.find_image_with_name(name)
        if image is None:
            raise KeyError(f"image {name} is not in the database")
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(Ri, float)), np.asarray(ti, float))
        rec.frame(image.frame_id).set_cam_from_world(image.camera_id, pose)
        rec.register_frame(image.frame_id)
    return rec


def seed_reconstruction(database_path: Path | str, names: Sequence[str], R: np.ndarray, t: np.ndarray,
                        conf: Optional[dict] = None, all_names: Optional[Sequence[str]] = None) -> SeedResult:
    """Refine seed poses ``R, t`` (world-to-camera, any gauge) of ``names`` by geometry.

    ``all_names`` (default: ``names``) are the images the mapper may try to register afterwards,
    e.g. a cluster's images whose seed pose was missing or rejected.
    """
    conf = {**default_conf, **(conf or {})}
    pycolmap.set_random_seed(conf["seed"])
    all_names = list(all_names if all_names is not None else names)
    database = pycolmap.Database.open(str(database_path))
    try:
        cache = pycolmap.DatabaseCache.create(database, pycolmap.DatabaseCacheOptions(
            min_num_matches=conf["min_num_matches"], image_names=set(all_names)))
    finally:
        database.close()
    rec = build_seeded_reconstruction(cache, names, R, t)
    mapper = pycolmap.IncrementalMapper(cache)
    mapper.begin_reconstruction(rec)
    mopts = _mapper_options(conf)
    stats: Dict[str, float] = {"seeded_images": len(names)}

    # Loose first pass: the seed is off by a few degrees, so COLMAP's 2-degree tolerance would
    # drop almost every track. Tolerances then shrink geometrically to COLMAP's defaults.
    angles = np.geomspace(conf["seed_max_angle_error"], 2.0, conf["num_rounds"])
    scales = np.geomspace(conf["seed_loss_scale"], 1.0, conf["num_rounds"])
    for angle, scale in zip(angles, scales):
        # Tracks are kept between rounds: the filter below drops the ones the refined poses reject.
        tri = _tri_options(conf, float(angle))
        for image_id in rec.reg_image_ids():
            mapper.triangulate_image(tri, image_id)
        mapper.complete_and_merge_tracks(tri)
        if rec.num_points3D() == 0:
            log.warning("seeded reconstruction: no track could be triangulated from the seed poses")
            mapper.end_reconstruction(discard=True)
            return SeedResult(None, {**stats, "registered": 0})
        mapper.adjust_global_bundle(mopts, _ba_options(conf, float(scale)))
        mopts.filter_max_reproj_error = max(conf["filter_max_reproj_error"], 4.0 * float(scale))
        mapper.filter_points(mopts)
    mopts.filter_max_reproj_error = conf["filter_max_reproj_error"]
    tri = _tri_options(conf)
    mapper.retriangulate(tri)
    mapper.iterative_global_refinement(3, 0.0005, mopts, _ba_options(conf, None), tri, normalize_reconstruction=False)
    mapper.filter_frames(mopts)

    if conf["register_missing"]:
        stats["registered_later"] = float(_register_missing(mapper, mopts, conf))
    registered = set(rec.reg_image_ids())
    stats.update(registered=len(registered), points=rec.num_points3D(),
                 reproj_error=float(rec.compute_mean_reprojection_error()))
    mapper.end_reconstruction(discard=False)
    return SeedResult(rec, stats)


def _register_missing(mapper: pycolmap.IncrementalMapper, mopts, conf: dict) -> int:
    """Register images without a (surviving) seed pose from the triangulated structure."""
    added = 0
    tri = _tri_options(conf)
    while True:
        candidates = mapper.find_next_images(mopts, structure_less=False)
        newly = [i for i in candidates if mapper.register_next_image(mopts, i)]
        for image_id in newly:
            mapper.triangulate_image(tri, image_id)
        if not newly:
            break
        added += len(newly)
        mapper.iterative_global_refinement(2, 0.0005, mopts, _ba_options(conf, None), tri, normalize_reconstruction=False)
    return added


def refine_model(database_path: Path | str, model: pycolmap.Reconstruction, all_names: Sequence[str],
                 conf: Optional[dict] = None) -> Optional[pycolmap.Reconstruction]:
    """``model``'s poses as the seed of :func:`seed_reconstruction`: tracks triangulated again from the
    database's matches, bundle-adjusted loose to strict, images of ``all_names`` it does not hold
    registered from the structure. None if nothing survives.

    The cameras start from the database's priors, not the model's focals: on middlebury, where the
    prior is 2-4x off, the global mapper's focals made a worse start (docs/results.md, "Two mappers")."""
    poses = poses_of(model)
    if len(poses) < 2:
        return None
    names = list(poses)
    return seed_reconstruction(database_path, names, np.stack([poses[n][0] for n in names]),
                               np.stack([poses[n][1] for n in names]), conf, all_names).reconstruction


def reconstruction_poses(rec: pycolmap.Reconstruction) -> Dict[str, tuple]:
    """``{image name: (R, t)}`` world-to-camera for every registered image."""
    return poses_of(rec)


def reconstruction_quality(rec: Optional[pycolmap.Reconstruction]) -> Dict[str, float]:
    """The numbers the seeded-vs-incremental choice compares."""
    if rec is None or rec.num_reg_images() == 0:
        return {"registered": 0, "observations": 0, "reproj_error": float("inf"), "points": 0}
    return {"registered": rec.num_reg_images(), "observations": rec.compute_num_observations(),
            "reproj_error": float(rec.compute_mean_reprojection_error()), "points": rec.num_points3D()}


def registered_names(rec: Optional[pycolmap.Reconstruction]) -> set:
    """Names of the images ``rec`` gives a pose."""
    return set() if rec is None else {im.name for im in rec.images.values() if im.has_pose}


def restrict(rec: pycolmap.Reconstruction, names: set) -> pycolmap.Reconstruction:
    """A copy of ``rec`` in which only the images in ``names`` stay registered (their observations
    only, so its quality compares with a model of those images)."""
    out = pycolmap.Reconstruction(rec)
    for frame_id in list(out.reg_frame_ids()):
        frame = out.frame(frame_id)
        if not any(out.image(d.id).name in names for d in frame.image_ids):
            out.deregister_frame(frame_id)
    return out


def best_per_model(seeded: Optional[pycolmap.Reconstruction], mapped: Sequence[pycolmap.Reconstruction],
                   min_observation_ratio: float = 1.0, max_reproj_ratio: float = 1.0
                   ) -> Tuple[List[pycolmap.Reconstruction], List[str]]:
    """The mapper's models, each replaced by the seeded model restricted to its images where
    :func:`better_of` prefers that; ``(models, "seeded" | "colmap" per model)``, largest first.

    Like is compared with like: the seeded model competes with each mapper model only over that
    model's images (plus images no mapper model registered, which go to the first model the seed
    wins), so a seeded model spanning two of the mapper's models can never merge them by
    registering more images than either. The ratios are :func:`better_of`'s, with no slack: at
    equal images the seeded model must explain the matches at least as well.
    """
    keep = dict(min_observation_ratio=min_observation_ratio, max_reproj_ratio=max_reproj_ratio, reproj_slack=0.0)
    if not mapped:
        return ([seeded], ["seeded"]) if better_of(seeded, None, **keep) == "seeded" else ([], [])
    if seeded is None:
        return list(mapped), ["colmap"] * len(mapped)
    free = registered_names(seeded) - set().union(*(registered_names(m) for m in mapped))
    chosen: List[Tuple[pycolmap.Reconstruction, str]] = []
    for m in mapped:
        part = restrict(seeded, registered_names(m) | free)
        if better_of(part, m, **keep) == "seeded":
            chosen.append((part, "seeded"))
            free -= registered_names(part)
        else:
            chosen.append((m, "colmap"))
    chosen.sort(key=lambda c: -c[0].num_reg_images())
    return [c[0] for c in chosen], [c[1] for c in chosen]


def pair_direction_error(rec: pycolmap.Reconstruction, database_path: Path | str, names: Sequence[str],
                         min_inliers: int = 30, cap_deg: float = 30.0, seed: int = 0) -> Optional[float]:
    """How far ``rec``'s cameras are from the verified pairs' own geometry: over every pair of
    ``names`` with ``min_inliers`` verified matches, the angle between the model's relative
    translation direction and the one of the essential matrix re-estimated from those matches with
    the model's cameras, capped at ``cap_deg`` (a few pairs on repeated structure must not decide),
    averaged; None with fewer than 3 such pairs. A model whose centres are wrong while it still
    explains the matches (a failed translation averaging, a wrong incremental branch) disagrees
    here with many pairs at once."""
    reg = {im.name: im for im in rec.images.values() if im.has_pose and im.name in set(names)}
    opts = pycolmap.RANSACOptions()
    opts.random_seed = int(seed)
    # the matches are verified inliers already: a few dozen trials find their E (pycolmap's default
    # of at least 1000 trials made this check cost as much as the mapping on benchmark_cpu)
    opts.min_num_trials, opts.max_num_trials = 20, 1000
    db = pycolmap.Database.open(str(database_path))
    try:
        ids = {im.name: im.image_id for im in db.read_all_images() if im.name in reg}
        kpts = {n: db.read_keypoints(i)[:, :2].astype(np.float64) for n, i in ids.items()}  # once per image
        errs = []
        order = sorted(reg)
        for k, a in enumerate(order):
            for b in order[k + 1:]:
                ia, ib = ids[a], ids[b]
                if not db.exists_two_view_geometry(ia, ib):
                    continue
                m = db.read_two_view_geometry(ia, ib).inlier_matches
                if m is None or len(m) < min_inliers:
                    continue
                if ia > ib:  # stored once, as (smaller id, larger id)
                    m = m[:, ::-1]
                est = pycolmap.estimate_essential_matrix(kpts[a][m[:, 0]], kpts[b][m[:, 1]], rec.cameras[reg[a].camera_id],
                                                         rec.cameras[reg[b].camera_id], opts)
                if est is None:
                    continue
                ca, cb = reg[a].cam_from_world(), reg[b].cam_from_world()
                rel = cb * ca.inverse()  # cam_b from cam_a, as the essential matrix's
                errs.append(min(cap_deg, float(vector_angle(rel.translation, est["cam2_from_cam1"].translation))))
        return float(np.mean(errs)) if len(errs) >= 3 else None
    finally:
        db.close()


def better_of(seeded: Optional[pycolmap.Reconstruction], incremental: Optional[pycolmap.Reconstruction],
              min_observation_ratio: float = 0.9, max_reproj_ratio: float = 1.5,
              reproj_slack: float = 0.5) -> str:
    """``"seeded"`` or ``"colmap"``, whichever reconstruction explains the matches better.

    More registered images wins. At equal count the seeded one must explain nearly as many
    observations (a wrong but self-consistent model triangulates only a fraction of the tracks)
    at a comparable reprojection error (at most ``max_reproj_ratio`` times the other's, or
    ``reproj_slack`` pixels more). The defaults are the mapper choice's (``mapper: best``).
    """
    qs, qi = reconstruction_quality(seeded), reconstruction_quality(incremental)
    if qs["registered"] != qi["registered"]:
        return "seeded" if qs["registered"] > qi["registered"] else "colmap"
    if qs["registered"] == 0:
        return "colmap"
    ok_obs = qs["observations"] >= min_observation_ratio * qi["observations"]
    ok_err = qs["reproj_error"] <= max(max_reproj_ratio * qi["reproj_error"], qi["reproj_error"] + reproj_slack)
    return "seeded" if ok_obs and ok_err else "colmap"
