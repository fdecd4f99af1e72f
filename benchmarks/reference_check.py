"""Check reference poses (and a submission) against two-view geometry, pair by pair.

    python benchmarks/reference_check.py --labels OUT/data/train_labels.csv --dataset beer \\
        --database OUT/work-shortlist/beer/database.db --camera ../shared/data/beer/sparse/0 \\
        [--submission OUT/best/submission.csv] [--pairs consecutive|verified] [--flag 20]

For each pair (consecutive images in name order, or every verified pair of the database), the
relative rotation of an essential matrix estimated from the pair's verified matches is compared
with the reference's relative rotation (and the submission's). Intrinsics: the first camera of the
COLMAP model ``--camera`` (scaled to each database image's width), else the database's own (its
focal prior without EXIF). A reference that disagrees by ~180° with well-supported pairs whose
neighbours agree is flipped there (docs/results.md, "The reference itself flips three times").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pycolmap

from memposer.data.imc import read_poses
from memposer.geometry import rotation_error


def _camera(db_cam: pycolmap.Camera, ref_cam: Optional[pycolmap.Camera]) -> pycolmap.Camera:
    """The database image's camera, or the reference camera scaled to its size (principal point centred)."""
    if ref_cam is None:
        return db_cam
    f = ref_cam.mean_focal_length() * db_cam.width / ref_cam.width
    return pycolmap.Camera(model="SIMPLE_PINHOLE", width=db_cam.width, height=db_cam.height,
                           params=[f, db_cam.width / 2, db_cam.height / 2])


def pair_checks(database: Path, reference: Dict[str, np.ndarray], pairs: str = "consecutive",
                ref_cam: Optional[pycolmap.Camera] = None, submission: Optional[Dict[str, np.ndarray]] = None,
                min_inliers: int = 15) -> List[dict]:
    """One row per checked pair: names, E's rotation angle and inliers, the reference's (and the
    submission's) angle and their distance to E's rotation, in degrees. ``reference`` and
    ``submission`` are ``{name: R}`` world-to-camera rotations."""
    db = pycolmap.Database.open(str(database))
    try:
        ims = {im.name: im for im in db.read_all_images() if im.name in reference}
        cams = {c.camera_id: c for c in db.read_all_cameras()}
        if pairs == "consecutive":
            names = sorted(ims)
            todo = list(zip(names[:-1], names[1:]))
        else:
            by_id = {im.image_id: im.name for im in ims.values()}
            todo = sorted(tuple(sorted((by_id[i], by_id[j]))) for i, j in
                          (pycolmap.pair_id_to_image_pair(p) for p in db.read_two_view_geometries()[0])
                          if i in by_id and j in by_id)
        rows = []
        for a, b in todo:
            ia, ib = ims[a].image_id, ims[b].image_id
            if not db.exists_two_view_geometry(ia, ib):
                continue
            m = db.read_two_view_geometry(ia, ib).inlier_matches
            if m is None or len(m) < min_inliers:
                continue
            if ia > ib:  # the database stores a pair once, as (smaller id, larger id)
                m = m[:, ::-1]
            ka, kb = db.read_keypoints(ia)[m[:, 0], :2], db.read_keypoints(ib)[m[:, 1], :2]
            est = pycolmap.estimate_essential_matrix(ka.astype(float), kb.astype(float),
                                                     _camera(cams[ims[a].camera_id], ref_cam),
                                                     _camera(cams[ims[b].camera_id], ref_cam))
            if est is None:
                continue
            R_e = est["cam2_from_cam1"].rotation.matrix()
            R_r = reference[b] @ reference[a].T
            row = {"a": a, "b": b, "inliers": int(est["num_inliers"]), "e_deg": rotation_error(R_e, np.eye(3)),
                   "ref_deg": rotation_error(R_r, np.eye(3)), "ref_vs_e": rotation_error(R_r, R_e)}
            if submission is not None and a in submission and b in submission:
                R_s = submission[b] @ submission[a].T
                row.update(sub_deg=rotation_error(R_s, np.eye(3)), sub_vs_e=rotation_error(R_s, R_e))
            rows.append(row)
        return rows
    finally:
        db.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--database", type=Path, required=True, help="the run's database.db for that dataset")
    p.add_argument("--camera", type=Path, help="COLMAP model whose first camera gives the intrinsics")
    p.add_argument("--submission", type=Path)
    p.add_argument("--pairs", choices=("consecutive", "verified"), default="consecutive")
    p.add_argument("--flag", type=float, default=20.0, help="mark pairs more than this many degrees from E")
    a = p.parse_args(argv)
    ref = {r.image: r.R for r in read_poses(a.labels) if r.dataset == a.dataset and r.R is not None}
    sub = ({r.image: r.R for r in read_poses(a.submission) if r.dataset == a.dataset and r.has_pose}
           if a.submission else None)
    cam = next(iter(pycolmap.Reconstruction(str(a.camera)).cameras.values())) if a.camera else None
    rows = pair_checks(a.database, ref, a.pairs, cam, sub)
    print(f"{'pair':<24}{'E deg':>8}{'inliers':>9}{'ref deg':>9}{'ref-E':>8}" + (f"{'sub deg':>9}{'sub-E':>8}" if sub else ""))
    for r in rows:
        flag = " <- reference" if r["ref_vs_e"] > a.flag else ""
        if sub and r.get("sub_vs_e", 0) > a.flag:
            flag += " <- submission"
        extra = f"{r.get('sub_deg', float('nan')):9.1f}{r.get('sub_vs_e', float('nan')):8.1f}" if sub else ""
        print(f"{r['a'] + ' ' + r['b']:<24}{r['e_deg']:8.1f}{r['inliers']:9d}{r['ref_deg']:9.1f}{r['ref_vs_e']:8.1f}{extra}{flag}")
    bad = sum(r["ref_vs_e"] > a.flag for r in rows)
    print(f"{len(rows)} pairs checked; the reference is more than {a.flag:g} deg from E on {bad}"
          + (f", the submission on {sum(r.get('sub_vs_e', 0) > a.flag for r in rows)}" if sub else ""))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
