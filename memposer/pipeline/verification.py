"""Stage 6: geometric verification of the matches, written into a COLMAP database.

Every image with features becomes a database image (one camera each, EXIF focal prior when known);
every matched pair gets pycolmap's two-view geometry (RANSAC, seeded). The database is what the
reconstruction stages read; the returned inlier counts are the match graph clustering works on.
"""
from __future__ import annotations

import logging
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
            for a, b in tqdm(pairs, desc="verification", disable=not progress, leave=False):
                m = read_matches(matches, a, b)
                n_inl = db.add_verified_pair(a, b, m, feats[a]["keypoints"], feats[b]["keypoints"], opts)
                if n_inl >= conf["min_num_inliers"]:
                    verified[(a, b)] = n_inl
    finally:
        db.close()
    log.info("verification: %d of %d pairs kept", len(verified), len(pairs))
    return verified


def verified_graph(verified: Dict[Tuple[str, str], int]) -> List[Tuple[str, str, int]]:
    """The verified pairs as ``[a, b, inliers]`` rows (for reports and JSON)."""
    return [(a, b, n) for (a, b), n in sorted(verified.items())]
