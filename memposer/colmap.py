"""Everything pycolmap-specific lives here, so that a pycolmap upgrade touches one file.

Written against pycolmap 4.x (rigs and frames exist; images without a rig get a trivial one from
the mapper). Poses leave this module as plain numpy world-to-camera ``(R, t)``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pycolmap

log = logging.getLogger(__name__)

Pose = Tuple[np.ndarray, np.ndarray]


def set_seed(seed: int) -> None:
    pycolmap.set_random_seed(int(seed))


def make_camera(width: int, height: int, focal: Optional[float] = None, model: str = "SIMPLE_RADIAL") -> pycolmap.Camera:
    """A camera with principal point at the centre; ``focal`` defaults to 1.2 * max side (COLMAP's prior)."""
    focal = float(focal) if focal else 1.2 * max(width, height)
    return pycolmap.Camera.create_from_model_name(0, model, focal, int(width), int(height))


class Database:
    """A COLMAP database filled from our own keypoints and matches (no COLMAP feature extraction)."""

    def __init__(self, path: Path | str, overwrite: bool = True):
        self.path = Path(path)
        if overwrite:  # with SQLite's -wal/-shm files, which a killed run can leave behind
            for f in (self.path, self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")):
                f.unlink(missing_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = pycolmap.Database.open(str(self.path))
        self.image_ids: Dict[str, int] = {}
        self.cameras: Dict[str, pycolmap.Camera] = {}

    def add_image(self, name: str, width: int, height: int, keypoints: np.ndarray,
                  focal: Optional[float] = None, camera_model: str = "SIMPLE_RADIAL") -> int:
        cam = make_camera(width, height, focal, camera_model)
        cam.has_prior_focal_length = focal is not None
        cam_id = self.db.write_camera(cam)
        cam.camera_id = cam_id
        image_id = self.db.write_image(pycolmap.Image(name=name, camera_id=cam_id))
        self.db.write_keypoints(image_id, np.ascontiguousarray(keypoints, dtype=np.float32).reshape(-1, 2))
        self.image_ids[name] = image_id
        self.cameras[name] = cam
        return image_id

    def estimate_pair(self, name0: str, name1: str, matches: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                      options: Optional[pycolmap.TwoViewGeometryOptions] = None) -> Optional[pycolmap.TwoViewGeometry]:
        """Two-view geometry of a pair (RANSAC); touches no database, so threads may run it side by side."""
        m = np.ascontiguousarray(matches, dtype=np.uint32).reshape(-1, 2)
        if len(m) < 8:
            return None
        return pycolmap.estimate_two_view_geometry(
            self.cameras[name0], np.asarray(kpts0, np.float64), self.cameras[name1], np.asarray(kpts1, np.float64),
            m, options or pycolmap.TwoViewGeometryOptions())

    def write_pair(self, name0: str, name1: str, matches: np.ndarray,
                   tvg: Optional[pycolmap.TwoViewGeometry]) -> int:
        """Store a pair's raw matches and its geometry (from ``estimate_pair``); returns its inliers."""
        id0, id1 = self.image_ids[name0], self.image_ids[name1]
        self.db.write_matches(id0, id1, np.ascontiguousarray(matches, dtype=np.uint32).reshape(-1, 2))
        n_inl = 0 if tvg is None or tvg.config in (pycolmap.TwoViewGeometryConfiguration.UNDEFINED,
                                                   pycolmap.TwoViewGeometryConfiguration.DEGENERATE) \
            else len(tvg.inlier_matches)
        if n_inl > 0:
            self.db.write_two_view_geometry(id0, id1, tvg)
        return n_inl

    def close(self) -> None:
        self.db.close()


def two_view_options(conf: dict) -> pycolmap.TwoViewGeometryOptions:
    opts = pycolmap.TwoViewGeometryOptions()
    opts.min_num_inliers = int(conf.get("min_num_inliers", 15))
    opts.ransac.max_error = float(conf.get("max_error", 4.0))
    opts.ransac.random_seed = int(conf.get("seed", 0))
    opts.ransac.max_num_trials = int(conf.get("max_num_trials", 10000))
    return opts


def poses_of(rec: pycolmap.Reconstruction) -> Dict[str, Pose]:
    out = {}
    for im in rec.images.values():
        if not im.has_pose:
            continue
        p = im.cam_from_world()
        out[im.name] = (np.asarray(p.rotation.matrix(), np.float64), np.asarray(p.translation, np.float64).reshape(3))
    return out


def run_mapper(database_path: Path | str, image_dir: Path | str, output_dir: Path | str,
               image_names: Sequence[str], conf: dict) -> List[pycolmap.Reconstruction]:
    """COLMAP's incremental (or global) mapper on ``image_names``; the models, largest first.

    ``conf`` is a full ``reconstruction`` section (``pipeline/reconstruction.default_conf`` holds
    every default; none is repeated here)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    mapper = conf["mapper"]
    set_seed(conf["seed"])
    if mapper == "global":
        if not hasattr(pycolmap, "global_mapping"):
            raise RuntimeError("this pycolmap has no global mapper; use mapper: incremental")
        check_global_options(conf)
        opts = pycolmap.GlobalPipelineOptions()
        opts.image_names = list(image_names)
        opts.num_threads = int(conf["num_threads"])
        opts.random_seed = int(conf["seed"])
        opts.min_num_matches = int(conf["min_num_matches"])
        opts.min_model_size = int(conf["min_model_size"])
        opts.multiple_models = int(conf["max_num_models"]) > 1
        recs = pycolmap.global_mapping(str(database_path), str(image_dir), str(output_dir), opts)
    elif mapper == "incremental":
        opts = pycolmap.IncrementalPipelineOptions()
        opts.image_names = list(image_names)
        opts.num_threads = int(conf["num_threads"])
        opts.random_seed = int(conf["seed"])
        opts.mapper.random_seed = int(conf["seed"])
        opts.mapper.num_threads = int(conf["num_threads"])
        opts.min_num_matches = int(conf["min_num_matches"])
        opts.min_model_size = int(conf["min_model_size"])
        opts.max_num_models = int(conf["max_num_models"])
        opts.extract_colors = False  # images may be EXIF-rotated relative to what COLMAP would read
        opts.ba_refine_principal_point = False
        # pycolmap 4's structure-less fallback (generalised 6-point RANSAC) can spend minutes per
        # image on images that will not register; off unless asked for.
        opts.structure_less_registration_fallback = bool(conf["structure_less_fallback"])
        if conf["max_runtime_seconds"]:
            opts.max_runtime_seconds = float(conf["max_runtime_seconds"])
        recs = pycolmap.incremental_mapping(str(database_path), str(image_dir), str(output_dir), opts)
    else:
        raise ValueError(f"unknown mapper {mapper!r} (incremental|global)")
    models = sorted((r for r in recs.values() if r.num_reg_images() > 0), key=lambda r: -r.num_reg_images())
    return models[:max(1, int(conf["max_num_models"]))]


INCREMENTAL_ONLY = {"max_runtime_seconds": 0, "structure_less_fallback": False}


def check_global_options(conf: dict) -> None:
    """The global mapper has no time limit and no structure-less fallback: asking for them is an error."""
    asked = [k for k, off in INCREMENTAL_ONLY.items() if conf.get(k, off) != off]
    if asked:
        raise ValueError(f"reconstruction.{asked[0]} works with the incremental mapper only; "
                         f"remove it or set reconstruction.mapper=incremental")


def read_model_poses(path: Path | str) -> Dict[str, Pose]:
    """World-to-camera poses of a COLMAP model folder (``cameras.bin``, ``images.bin``...)."""
    return poses_of(pycolmap.Reconstruction(str(path)))


def model_of(poses: Dict[str, Pose], database_path: Path | str,
             source: Optional[pycolmap.Reconstruction] = None) -> pycolmap.Reconstruction:
    """A COLMAP model registering exactly the images of ``poses``, at exactly those poses.

    Cameras and keypoints come from the database (ids kept); with ``source`` (the reconstruction
    the poses came from) its refined intrinsics and the 3D points seen by at least two of these
    images come too. Images the source lacks (e.g. filled in from the network) get no points.
    """
    rec = pycolmap.Reconstruction()
    db = pycolmap.Database.open(str(database_path))
    try:
        for name in sorted(poses):
            image = db.read_image_with_name(name)
            if image is None:
                raise KeyError(f"image {name} is not in the database {database_path}")
            cam = db.read_camera(image.camera_id)
            src = source.find_image_with_name(name) if source is not None else None
            if src is not None:
                cam.params = source.cameras[src.camera_id].params
            if not rec.exists_camera(cam.camera_id):
                rec.add_camera_with_trivial_rig(cam)
            keypoints = np.asarray(db.read_keypoints(image.image_id), np.float64)[:, :2]
            R, t = poses[name]
            rec.add_image_with_trivial_frame(
                pycolmap.Image(name=name, keypoints=keypoints, camera_id=cam.camera_id, image_id=image.image_id),
                pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(R, np.float64)), np.asarray(t, np.float64)))
    finally:
        db.close()
    if source is not None:
        _copy_points(source, rec)
    return rec


def _copy_points(source: pycolmap.Reconstruction, rec: pycolmap.Reconstruction) -> None:
    """``source``'s 3D points, each with its observations in ``rec``'s images (two at least)."""
    ids = {im.name: im.image_id for im in rec.images.values()}
    to_new = {i: ids[im.name] for i, im in source.images.items() if im.name in ids}
    for p in source.points3D.values():
        elements = [pycolmap.TrackElement(to_new[e.image_id], e.point2D_idx) for e in p.track.elements
                    if e.image_id in to_new]
        if len({e.image_id for e in elements}) >= 2:
            rec.add_point3D(p.xyz, pycolmap.Track(elements), p.color)
    rec.update_point_3d_errors()


def write_model(rec: pycolmap.Reconstruction, path: Path | str) -> Path:
    """``cameras.bin``, ``images.bin``, ``points3D.bin`` (and rigs/frames) in ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rec.write_binary(str(path))
    return path


def model_points(path: Path | str) -> np.ndarray:
    """``(P, 3)`` 3D points of a COLMAP model folder, in point-id order."""
    rec = pycolmap.Reconstruction(str(path))
    ids = sorted(rec.point3D_ids())
    return np.array([rec.points3D[i].xyz for i in ids], np.float64).reshape(-1, 3)


def copy_database(src: Path | str, dst: Path | str) -> Path:
    """Copy SQLite database ``src`` to ``dst`` (replaced) with the backup API: consistent even with a
    write-ahead log or another process writing."""
    import sqlite3
    from contextlib import closing

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    with closing(sqlite3.connect(str(src))) as a, closing(sqlite3.connect(str(dst))) as b:
        a.backup(b)
    return dst


def database_without_pairs(src: Path | str, dst: Path | str, pairs: Iterable[Tuple[str, str]]) -> Path:
    """A copy of database ``src`` at ``dst`` in which ``pairs`` (image names) have no two-view
    geometry, so the mapper no longer uses them; their raw matches stay."""
    dst = copy_database(src, dst)
    db = pycolmap.Database.open(str(dst))
    try:
        for x, y in pairs:
            ix, iy = db.read_image_with_name(x), db.read_image_with_name(y)
            if ix is not None and iy is not None and db.exists_two_view_geometry(ix.image_id, iy.image_id):
                db.delete_two_view_geometry(ix.image_id, iy.image_id)
    finally:
        db.close()
    return dst


def quiet(level: int = 2) -> None:
    """Silence glog INFO output (COLMAP is chatty); 2 = errors only, 0 = everything."""
    try:
        pycolmap.logging.minloglevel = level
    except Exception:  # older/newer bindings may not expose it
        pass


def log_level() -> int:
    """COLMAP's current glog level (what :func:`quiet` set), for worker processes to copy."""
    try:
        return int(pycolmap.logging.minloglevel)
    except Exception:  # older/newer bindings may not expose it
        return 2


__all__: Iterable[str] = ["Database", "run_mapper", "poses_of", "read_model_poses", "two_view_options", "make_camera", "set_seed", "quiet",
                          "model_of", "write_model", "model_points", "copy_database", "database_without_pairs"]
