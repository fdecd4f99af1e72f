"""A mapper's model refined once more: a robust bundle adjustment, and one shared camera for images
the data cannot tell apart.

Without EXIF every camera starts from COLMAP's prior (1.2 x the long side) and the mapper refines a
focal length per image. For photos of one camera those per-image focals are free to trade focal for
depth, and they do: middlebury's dino (one calibrated camera, focal 5.2 x the long side) comes out
of the mapper with focals from 4.3 to 6.3, and its camera centres slide along the viewing rays. So
images of one size and no focal prior are given one shared camera (median of their parameters) and
the model is adjusted again; the shared model is kept when its median reprojection error stays
within ``share_max_error_ratio`` of the same model adjusted with a camera per image, i.e. when the
data cannot tell the cameras apart. Rendered scenes whose focals differ by a few percent per image
fail that test (1.2-2.3x) and keep a camera per image; docs/results.md, "One camera".

Where the whole group fails, ``share_partial`` asks the same question per image: images whose own
median reprojection error grows by at most ``share_max_error_ratio`` under the shared camera share it,
the others keep theirs, and that model is kept under the same test. Meant for photos of a landmark by
many people (liberty), which fail as a group (3.6x) although far, zoomed photos pin no focal of
their own; measured, it moves liberty by -0.01 to +0.06 depending on the mapper's model and the
rendered sets by 0 to +0.004, so it is off (docs/results.md, "One camera per image where the data
ask for it").
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycolmap

log = logging.getLogger(__name__)

default_conf = {
    "final_ba": True,  # one more bundle adjustment of each mapper model (robust loss, focal + distortion)
    "robust_scale": 1.0,  # Cauchy loss scale in pixels
    "share": True,  # one camera for same-size images without a focal prior, where the fit allows it
    "share_max_error_ratio": 1.1,  # shared model's median reprojection error / per-image model's
    "share_min_images": 3,  # smaller groups keep their own cameras
    # where a group fails, share among the images whose own error allows it; measured, not better
    # (docs/results.md, "One camera per image where the data ask for it")
    "share_partial": False,
}


def refine(rec: pycolmap.Reconstruction, conf: Optional[dict] = None, num_threads: int = -1
           ) -> Tuple[pycolmap.Reconstruction, Dict[str, float]]:
    """``rec`` adjusted by ``conf`` (a new reconstruction; ``rec`` is not changed) and what was done."""
    conf = {**default_conf, **(conf or {})}
    if not (conf["final_ba"] or conf["share"]) or rec.num_reg_images() < 2:
        return rec, {}
    before = median_error(copy_model(rec))
    each = adjust(copy_model(rec), conf["robust_scale"], num_threads)
    stats = {"intrinsics_error_before": before, "intrinsics_error_each": median_error(each)}
    if not _sane(stats["intrinsics_error_each"], before):
        # seen on one rendered model (median error 1e154 px after it): keep the mapper's model
        log.warning("intrinsics: the last adjustment diverged (median error %.3g px, %.3g before); model kept as mapped",
                    stats["intrinsics_error_each"], before)
        stats["intrinsics_diverged"] = 1.0
        return rec, stats
    groups = shareable_groups(each, int(conf["share_min_images"])) if conf["share"] else []
    if not groups:
        return (each if conf["final_ba"] else rec), stats
    shared = adjust(copy_model(each, groups), conf["robust_scale"], num_threads)
    limit = float(conf["share_max_error_ratio"])
    stats["intrinsics_error_shared"] = median_error(shared)
    keep = _within(stats["intrinsics_error_shared"], stats["intrinsics_error_each"], limit)
    stats["intrinsics_shared"] = float(keep)
    log.debug("intrinsics: %d images in %d shared cameras, median error %.3f vs %.3f px -> %s",
              sum(map(len, groups)), len(groups), stats["intrinsics_error_shared"], stats["intrinsics_error_each"],
              "shared" if keep else "per image")
    if keep:
        return shared, stats
    if conf["share_partial"]:
        partial = partial_groups(each, shared, groups, limit, int(conf["share_min_images"]))
        if partial:
            mixed = adjust(copy_model(each, partial), conf["robust_scale"], num_threads)
            stats["intrinsics_error_partial"] = median_error(mixed)
            log.debug("intrinsics: %d of %d images share cameras, median error %.3f px", sum(map(len, partial)),
                      sum(map(len, groups)), stats["intrinsics_error_partial"])
            if _within(stats["intrinsics_error_partial"], stats["intrinsics_error_each"], limit):
                stats["intrinsics_partial_images"] = float(sum(map(len, partial)))
                return mixed, stats
    return each, stats


def _within(error: float, reference: float, ratio: float) -> bool:
    """``error`` is finite and at most ``ratio`` x ``reference``."""
    return bool(np.isfinite(error)) and error <= ratio * max(reference, 1e-9)


def partial_groups(each: pycolmap.Reconstruction, shared: pycolmap.Reconstruction, groups: List[List[int]],
                   ratio: float, min_images: int) -> List[List[int]]:
    """The images of ``groups`` whose median reprojection error in ``shared`` is at most ``ratio`` x
    theirs in ``each`` (groups of at least ``min_images``)."""
    own, common = image_errors(each), image_errors(shared)
    out = [[i for i in g if _within(common.get(i, np.nan), own.get(i, np.nan), ratio)] for g in groups]
    return [g for g in out if len(g) >= min_images]


def image_errors(rec: pycolmap.Reconstruction) -> Dict[int, float]:
    """Median reprojection error (pixels) of each registered image over its observations of 3D points."""
    out = {}
    for iid in rec.reg_image_ids():
        im = rec.images[iid]
        obs = [(p.xy, p.point3D_id) for p in im.points2D if p.has_point3D()]
        if not obs:
            continue
        xy = np.array([o[0] for o in obs], np.float64)
        X = np.array([rec.points3D[o[1]].xyz for o in obs], np.float64)
        pose = im.cam_from_world()
        cam_pts = X @ pose.rotation.matrix().T + pose.translation
        proj = np.asarray(rec.cameras[im.camera_id].img_from_cam(cam_pts), np.float64)
        err = np.linalg.norm(proj - xy, axis=1)  # points behind the camera project to nan
        out[iid] = float(np.median(np.where(np.isfinite(err), err, np.inf)))
    return out


def _sane(after: float, before: float, factor: float = 1.5) -> bool:
    """An adjustment's median error is finite and not clearly worse than before it."""
    return bool(np.isfinite(after)) and (not np.isfinite(before) or after <= factor * before + 1e-6)


def shareable_groups(rec: pycolmap.Reconstruction, min_images: int) -> List[List[int]]:
    """Image ids of the registered images whose cameras have no focal prior, grouped by camera model
    and size (groups of at least ``min_images``)."""
    groups: Dict[tuple, List[int]] = {}
    for iid in rec.reg_image_ids():
        cam = rec.cameras[rec.images[iid].camera_id]
        if not cam.has_prior_focal_length:
            groups.setdefault((cam.model_name, cam.width, cam.height), []).append(iid)
    return [sorted(g) for g in groups.values() if len(g) >= min_images]


def copy_model(rec: pycolmap.Reconstruction, groups: Optional[List[List[int]]] = None) -> pycolmap.Reconstruction:
    """The registered images, their cameras and the 3D points of ``rec`` in a new reconstruction;
    each image id group of ``groups`` on one camera (the group's first camera id, median parameters)."""
    camera_of = {iid: rec.images[iid].camera_id for iid in rec.reg_image_ids()}
    params = {cid: np.asarray(rec.cameras[cid].params, np.float64) for cid in set(camera_of.values())}
    for g in groups or []:
        cid = camera_of[g[0]]
        params[cid] = np.median(np.stack([params[camera_of[i]] for i in g]), 0)
        for i in g:
            camera_of[i] = cid
    out = pycolmap.Reconstruction()
    for cid in sorted(set(camera_of.values())):
        cam = rec.cameras[cid]
        new = pycolmap.Camera(model=cam.model_name, width=cam.width, height=cam.height, params=params[cid], camera_id=cid)
        new.has_prior_focal_length = cam.has_prior_focal_length
        out.add_camera_with_trivial_rig(new)
    for iid, cid in camera_of.items():
        im = rec.images[iid]
        keypoints = np.array([p.xy for p in im.points2D], np.float64).reshape(-1, 2)
        out.add_image_with_trivial_frame(pycolmap.Image(name=im.name, keypoints=keypoints, camera_id=cid, image_id=iid),
                                         im.cam_from_world())
    for p in rec.points3D.values():
        track = [pycolmap.TrackElement(e.image_id, e.point2D_idx) for e in p.track.elements if e.image_id in camera_of]
        if len({e.image_id for e in track}) >= 2:
            out.add_point3D(p.xyz, pycolmap.Track(track), p.color)
    return out


def adjust(rec: pycolmap.Reconstruction, robust_scale: float, num_threads: int = -1) -> pycolmap.Reconstruction:
    """Bundle adjustment in place (poses, points, focal lengths and distortion; Cauchy loss)."""
    opts = pycolmap.BundleAdjustmentOptions()
    opts.refine_focal_length = opts.refine_extra_params = True
    opts.refine_principal_point = False
    opts.print_summary = False
    opts.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    opts.ceres.loss_function_scale = robust_scale
    opts.ceres.solver_options.num_threads = num_threads
    config = pycolmap.BundleAdjustmentConfig()
    for iid in rec.reg_image_ids():
        config.add_image(iid)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    # the adjuster itself, not pycolmap.bundle_adjustment: that one resets COLMAP's log level to 0
    # and prints its banner even in quiet workers
    pycolmap.create_default_bundle_adjuster(opts, config, rec).solve()
    rec.update_point_3d_errors()
    return rec


def median_error(rec: pycolmap.Reconstruction) -> float:
    """Median over 3D points of their mean reprojection error (pixels), computed afresh."""
    rec.update_point_3d_errors()
    errors = [p.error for p in rec.points3D.values()]
    return float(np.median(errors)) if errors else float("nan")
