"""Point tracks of one cluster, from the verified matches in the COLMAP database: MemPoser's input.

A track is a connected set of keypoints linked by the inlier matches of verified image pairs (the
two-view geometries the verification stage wrote). Tracks that hold two keypoints of one image are
inconsistent and dropped. Keypoints are normalised by each image's camera (the focal prior COLMAP
starts from, EXIF or ``1.2 * max side``): ``obs[i, j] = cam_from_img(keypoint of track j in image i)``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycolmap
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

log = logging.getLogger(__name__)

default_conf = {
    "max_tracks": 1024,   # tracks kept (MemPoser's P): each image's longest first, then the longest overall
    "per_image": 24,      # tracks every image gets first, where it has them
    "min_length": 2,
}


@dataclass
class ClusterTracks:
    """``obs`` (N,P,2) normalised points, ``vis`` (N,P) bool, ``names`` (N,) in the caller's order;
    ``exif`` (N,) bool: the image's camera has a focal prior from EXIF (COLMAP's ``has_prior_focal_length``)."""

    names: List[str]
    obs: np.ndarray
    vis: np.ndarray
    exif: Optional[np.ndarray] = None

    @property
    def lengths(self) -> np.ndarray:
        return self.vis.sum(0)


def _read(database_path: Path | str, names: Sequence[str], focals: Optional[Dict[str, float]] = None):
    db = pycolmap.Database.open(str(database_path))
    try:
        images = {im.name: im for im in db.read_all_images()}
        missing = [n for n in names if n not in images]
        if missing:
            raise KeyError(f"images not in the database {database_path}: {missing[:5]}")
        cameras = {c.camera_id: c for c in db.read_all_cameras()}
        ids = {images[n].image_id: i for i, n in enumerate(names)}
        kps = [np.asarray(db.read_keypoints(images[n].image_id))[:, :2] for n in names]
        pair_ids, geoms = db.read_two_view_geometries()
        matches = []
        for pid, g in zip(pair_ids, geoms):
            a, b = pycolmap.pair_id_to_image_pair(pid)
            if a in ids and b in ids and len(g.inlier_matches):
                matches.append((ids[a], ids[b], np.asarray(g.inlier_matches, np.int64)))
        cams = [cameras[images[n].camera_id] for n in names]
        for i, n in enumerate(names):
            if focals and n in focals:  # a copy: cameras shared between images keep their own focal
                cams[i] = copy.copy(cams[i])
                cams[i].focal_length = float(focals[n])
        norm = [c.cam_from_img(k.astype(np.float64)) if len(k) else np.zeros((0, 2)) for c, k in zip(cams, kps)]
        exif = np.array([bool(cameras[images[n].camera_id].has_prior_focal_length) for n in names], bool)
    finally:
        db.close()
    return norm, matches, exif


def cluster_tracks(database_path: Path | str, names: Sequence[str], conf: Dict | None = None,
                   focals: Optional[Dict[str, float]] = None) -> ClusterTracks:
    """Tracks among ``names`` (see the module docstring); at most ``max_tracks`` of them.

    ``focals`` {name: pixels}: normalise those images' keypoints with this focal instead of their
    database camera's (e.g. a known calibration, to measure what the prior costs)."""
    conf = {**default_conf, **(conf or {})}
    names = list(names)
    norm, matches, exif = _read(database_path, names, focals)
    offset = np.concatenate([[0], np.cumsum([len(k) for k in norm])])
    if not matches:
        return ClusterTracks(names, np.zeros((len(names), 0, 2), np.float32), np.zeros((len(names), 0), bool), exif)
    rows = np.concatenate([offset[a] + m[:, 0] for a, b, m in matches])
    cols = np.concatenate([offset[b] + m[:, 1] for a, b, m in matches])
    n_nodes = int(offset[-1])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    used = np.unique(np.concatenate([rows, cols]))
    image_of = np.searchsorted(offset, used, side="right") - 1
    lab = label[used]
    # a track with two keypoints in one image is inconsistent: drop it
    key = lab.astype(np.int64) * len(names) + image_of
    uniq, counts = np.unique(key, return_counts=True)
    bad = np.unique(uniq[counts > 1] // len(names))
    keep = ~np.isin(lab, bad)
    used, image_of, lab = used[keep], image_of[keep], lab[keep]
    tracks, inv = np.unique(lab, return_inverse=True)
    length = np.bincount(inv)
    ok = length >= conf["min_length"]
    chosen = _select(inv, image_of, length, ok, len(names), conf)
    col = {t: j for j, t in enumerate(chosen)}
    sel = np.isin(inv, chosen)
    obs = np.zeros((len(names), len(chosen), 2), np.float32)
    vis = np.zeros((len(names), len(chosen)), bool)
    j = np.array([col[t] for t in inv[sel]], dtype=np.int64)
    i = image_of[sel]
    obs[i, j] = np.concatenate(norm)[used[sel]] if len(j) else obs[i, j]
    vis[i, j] = True
    log.debug("tracks: %d images, %d consistent tracks, %d kept (%d dropped as inconsistent)",
              len(names), int(ok.sum()), len(chosen), len(bad))
    return ClusterTracks(names, obs, vis, exif)


def select_tracks(vis: np.ndarray, conf: Dict | None = None) -> np.ndarray:
    """Columns of a dense (N,P) visibility to keep, by the rule :func:`cluster_tracks` uses."""
    conf = {**default_conf, **(conf or {})}
    image_of, inv = np.nonzero(vis)
    length = vis.sum(0)
    return _select(inv, image_of, length, length >= conf["min_length"], vis.shape[0], conf)


def _select(inv: np.ndarray, image_of: np.ndarray, length: np.ndarray, ok: np.ndarray, n_images: int,
            conf: dict) -> np.ndarray:
    """Track indices: each image's ``per_image`` longest, then the longest overall, ``max_tracks`` in all."""
    order = np.lexsort((np.arange(len(length)), -length))  # longest first, ties by index: deterministic
    order = order[ok[order]]
    rank = np.empty(len(length), np.int64)
    rank[order] = np.arange(len(order))
    first = set()
    obs_rank = np.where(ok[inv], rank[inv], len(length))
    for i in range(n_images):
        r = np.sort(obs_rank[image_of == i])
        r = r[r < len(length)][: conf["per_image"]]
        first.update(order[r].tolist())
    first_sorted = sorted(first, key=lambda t: rank[t])[: conf["max_tracks"]]
    rest = [t for t in order if t not in first][: max(0, conf["max_tracks"] - len(first_sorted))]
    return np.array(sorted(first_sorted + rest, key=lambda t: rank[t]), dtype=np.int64)
