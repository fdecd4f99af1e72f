"""Focal lengths from the view graph, before any model, against a known focal: is self-calibration an option?

    python benchmarks/focal_calibration.py --real ../shared/data/imc_real/train --work WORK --truth temple=2.4 dino=5.2

``WORK`` is an ``infer.py`` work folder of that split (``WORK/<dataset>/database.db``). Per labelled
scene, as focal / long side (median over its images): COLMAP's prior; pycolmap's view-graph
calibration (``calibrate_view_graph``, GLOMAP's, run on a copy of the database, default options);
and one focal shared by the scene, the minimum over a grid of the median over its verified pairs of
``(s1 - s2) / (s1 + s2)``, the singular values of ``K^T F K`` (an essential matrix has s1 = s2).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pycolmap

from memposer.data.imc import read_poses

GRID = np.exp(np.linspace(np.log(0.3), np.log(12.0), 200))


def _focals(db_path: Path) -> dict:
    d = pycolmap.Database.open(str(db_path))
    cams = {c.camera_id: c for c in d.read_all_cameras()}
    out = {im.name: cams[im.camera_id].mean_focal_length() / max(cams[im.camera_id].width, cams[im.camera_id].height)
           for im in d.read_all_images()}
    d.close()
    return out


def shared_focal(db_path: Path, names: set, min_inliers: int = 30) -> float:
    """The grid focal / long side whose essential matrices are closest to valid over the scene's pairs."""
    d = pycolmap.Database.open(str(db_path))
    ims = {i.image_id: i for i in d.read_all_images()}
    cams = {c.camera_id: c for c in d.read_all_cameras()}
    ids, geoms = d.read_two_view_geometries()
    d.close()
    pairs = []
    for pid, g in zip(ids, geoms):
        a, b = (ims[i] for i in pycolmap.pair_id_to_image_pair(pid))
        F = np.asarray(g.F)
        if a.name in names and b.name in names and len(g.inlier_matches) >= min_inliers and np.abs(F).sum() > 0:
            pairs.append((F, cams[a.camera_id], cams[b.camera_id]))
    if not pairs:
        return float("nan")

    def K(cam, s):
        f = s * max(cam.width, cam.height)
        return np.array([[f, 0, cam.width / 2], [0, f, cam.height / 2], [0, 0, 1]])

    cost = []
    for s in GRID:
        sv = np.array([np.linalg.svd(K(cb, s).T @ F @ K(ca, s), compute_uv=False) for F, ca, cb in pairs])
        cost.append(np.median((sv[:, 0] - sv[:, 1]) / (sv[:, 0] + sv[:, 1])))
    return float(GRID[int(np.argmin(cost))])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, required=True, help="labelled split (train/ beside train_labels.csv)")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--truth", nargs="*", default=[], metavar="SCENE=F", help="known focal / long side")
    a = p.parse_args(argv)
    truth = {k: float(v) for k, v in (x.split("=") for x in a.truth)}
    scenes = defaultdict(set)
    for r in read_poses(a.real.parent / f"{a.real.name}_labels.csv"):
        if r.R is not None:
            scenes[(r.dataset, r.scene)].add(r.image)
    print(f"{'scene':<24}{'images':>7}{'truth':>8}{'prior':>8}{'view graph':>12}{'shared F':>10}")
    for ds in sorted({d for d, _ in scenes}):
        db = a.work / ds / "database.db"
        if not db.is_file():
            print(f"{ds}: no database at {db}", file=sys.stderr)
            continue
        prior = _focals(db)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "database.db"
            shutil.copy(db, copy)
            pycolmap.calibrate_view_graph(str(copy), pycolmap.ViewGraphCalibrationOptions(random_seed=0))
            calib = _focals(copy)
        for (d, sc), names in sorted(scenes.items()):
            names = names & set(prior)
            if d != ds or len(names) < 3:
                continue
            med = lambda f: float(np.median([f[n] for n in names]))  # noqa: E731
            print(f"{ds + '/' + sc:<24}{len(names):>7}{truth.get(sc, float('nan')):>8.2f}{med(prior):>8.2f}"
                  f"{med(calib):>12.2f}{shared_focal(db, names):>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
