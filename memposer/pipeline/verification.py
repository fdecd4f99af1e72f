"""Stage 6: geometric verification of the matches, written into a COLMAP database.

Every image with features becomes a database image (one camera each, EXIF focal prior when known);
every matched pair gets pycolmap's two-view geometry (RANSAC, seeded). The database is what the
reconstruction stages read; the returned inlier counts are the match graph clustering works on.
RANSAC runs on ``workers`` threads (pycolmap releases the GIL in it); the database is written by
one thread in the order of the pairs, and each pair's RANSAC is seeded alike, so the database does
not depend on ``workers``.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import h5py
from tqdm import tqdm

from memposer import colmap
from memposer.pipeline.features import FeatureCache
from memposer.pipeline.matching import read_matches

log = logging.getLogger(__name__)

default_conf = {
    "min_num_inliers": 15,
    "max_error": 4.0,  # RANSAC threshold in pixels of the original image
    "max_num_trials": 10000,
    "seed": 0,
    "camera_model": "SIMPLE_RADIAL",
    "workers": 0,  # RANSAC threads; 0: one per core
    "chunk": 256,  # pairs in flight at once (bounds the matches held in memory)
}


def verify_pairs(names: Sequence[str], pairs: Sequence[Tuple[str, str]], feature_path: Path | str,
                 match_path: Path | str, database_path: Path | str, conf: Optional[dict] = None,
                 progress: bool = True) -> Dict[Tuple[str, str], int]:
    """Write a fresh database for ``names``; ``{(a, b): inliers}`` for pairs that passed."""
    conf = {**default_conf, **(conf or {})}
    opts = colmap.two_view_options(conf)
    db = colmap.Database(database_path)
    verified: Dict[Tuple[str, str], int] = {}
    try:
        with FeatureCache(feature_path) as feats, h5py.File(match_path, "r") as matches:
            for n in names:
                f = feats[n]
                w, h = (int(v) for v in f["size"])
                db.add_image(n, w, h, f["keypoints"], f["focal"] if f["focal"] > 0 else None, conf["camera_model"])
            kpts = {n: feats[n]["keypoints"] for n in names}
            workers = int(conf["workers"]) or os.cpu_count() or 1
            bar = tqdm(total=len(pairs), desc="verification", disable=not progress, leave=False)
            with ThreadPoolExecutor(workers) as pool, bar:
                for start in range(0, len(pairs), int(conf["chunk"])):
                    chunk = pairs[start:start + int(conf["chunk"])]
                    found = [read_matches(matches, a, b) for a, b in chunk]  # h5py: one thread
                    tvgs = pool.map(lambda i: db.estimate_pair(*chunk[i], found[i], kpts[chunk[i][0]],
                                                               kpts[chunk[i][1]], opts), range(len(chunk)))
                    for (a, b), m, tvg in zip(chunk, found, tvgs):
                        n_inl = db.write_pair(a, b, m, tvg)
                        if n_inl >= conf["min_num_inliers"]:
                            verified[(a, b)] = n_inl
                        bar.update()
    finally:
        db.close()
    log.info("verification: %d of %d pairs kept", len(verified), len(pairs))
    return verified


def verified_graph(verified: Dict[Tuple[str, str], int]) -> List[Tuple[str, str, int]]:
    """The verified pairs as ``[a, b, inliers]`` rows (for reports and JSON)."""
    return [(a, b, n) for (a, b), n in sorted(verified.items())]
