"""Is it the cameras or the tracks? MemPoser on a real capture's cameras with synthetic points.

    python benchmarks/short_tracks.py --reference ../shared/data/beer/sparse/0 --every 3 --runs 2

Takes the cameras (poses, true intrinsics) of every ``--every``-th image of a COLMAP model, puts a
synthetic blob (``memposer.data.tracks``) of the points' robust size at their robust centre, and
projects it exactly. Rows: every point visible where it projects, then each point kept only within
``--windows`` degrees of one preferred viewing ray (a random camera that sees it), as real tracks
are short. Prints the relative-rotation / direction medians (degrees) and the median track length.
One run per ``--runs`` (different blob and windows).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from model_eval import pair_errors_deg  # benchmarks/model_eval.py: a script's own folder is first on sys.path

from memposer.data.tracks import object_points, view_window_mask
from memposer.pipeline.tracks import select_tracks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/memposer-tracks.safetensors")
    p.add_argument("--reference", type=Path, required=True, help="a COLMAP model (cameras + points)")
    p.add_argument("--every", type=int, default=3)
    p.add_argument("--max-images", type=int, default=24)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--windows", type=float, nargs="+", default=[15, 25, 40])
    p.add_argument("--max-tracks", type=int, default=1024)
    a = p.parse_args(argv)
    import pycolmap  # noqa: PLC0415

    from memposer.models.checkpoint import load_checkpoint  # noqa: PLC0415

    model = load_checkpoint(a.checkpoint, map_location="cpu")
    rec = pycolmap.Reconstruction(str(a.reference))
    images = sorted(rec.images.values(), key=lambda im: im.name)[::a.every][:a.max_images]
    R = np.stack([im.cam_from_world().rotation.matrix() for im in images])
    t = np.stack([im.cam_from_world().translation for im in images])
    C = -np.einsum("nji,nj->ni", R, t)
    f = np.array([rec.cameras[im.camera_id].focal_length_x for im in images])
    half = np.array([[rec.cameras[im.camera_id].width / 2, rec.cameras[im.camera_id].height / 2] for im in images])
    X = np.stack([q.xyz for q in rec.points3D.values()])
    centre = np.median(X, 0)
    radius = float(np.median(np.linalg.norm(X - centre, axis=1)))
    print(f"{len(images)} cameras of {a.reference}; points: centre {np.round(centre, 2)}, radius {radius:.2f}")
    for run in range(a.runs):
        rng = np.random.default_rng(run)
        pts, _ = object_points(rng, 4000)
        pts = centre + pts * radius
        Xc = np.einsum("nij,pj->npi", R, pts) + t[:, None]
        obs = Xc[..., :2] / np.maximum(Xc[..., 2:], 1e-6)
        inside = (Xc[..., 2] > 0.1) & (np.abs(obs * f[:, None, None]) < half[:, None]).all(-1)
        to_cam = C[:, None] - pts[None]
        rows = [("all visible", inside)]
        for w in a.windows:
            rows.append((f"window {w:g} deg", inside & view_window_mask(rng, inside, to_cam, {"view_window": [w, w], "view_scale": 10.0})))
        for name, vis in rows:
            keep = select_tracks(vis, {"max_tracks": a.max_tracks})
            v = vis[:, keep]
            o = np.where(v[..., None], obs[:, keep], 0).astype(np.float32)
            pred = model.predict(torch.from_numpy(o), torch.from_numpy(v))
            e = pair_errors_deg(pred["R"].double().numpy(), pred["t"].double().numpy(), R, t)
            length = v.sum(0)
            print(f"run {run}  {name:<16} rotation {np.median(e['rot']):6.1f}  direction {np.median(e['tdir']):6.1f}"
                  f"  track length median {np.median(length):.0f} of {len(images)}  cameras seeing < 8: {(v.sum(1) < 8).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
