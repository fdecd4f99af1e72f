"""MemPoser's poses before any bundle adjustment, against the identity and a classical chain.

    python benchmarks/model_eval.py --checkpoint checkpoints/memposer-tracks.safetensors --synthetic 64 --runs 2
    python benchmarks/model_eval.py --checkpoint CKPT --real ../shared/data/imc_real/train --work WORK
    python benchmarks/model_eval.py --checkpoint CKPT --reference ../shared/data/beer/sparse/0 --every 3

``--synthetic N``: N new synthetic scenes per run (seed keys training and validation never use),
one run per ``--runs``. ``--real SPLIT --work WORK``: a labelled competition split and the work
folder of an ``infer.py`` run on it (``WORK/<dataset>/database.db``); each labelled scene's images
that the database holds are one cluster, its tracks come from the verified matches.
``--reference MODEL``: a COLMAP model's own tracks (its 3D points' observations, true intrinsics),
every ``--every``-th image from offset ``run`` (``--runs`` disjoint image sets), observed or
reprojected exactly: the model's error with matching and intrinsics taken out of the way.
``--reproject`` (with ``--real``): the same clusters with only the observations that agree with the
reference poses, and with those moved onto exact reprojections: layout against match noise.
``--upright`` (with ``--real``): also each set with every camera rolled upright about its axis.
``--roll-tta K``: predict under K whole-scene rolls and keep the answer that agrees best with the
two-view rotations (``memposer.models.tta``); with ``--real --turns`` each image's keypoints are first
turned by the quarter turns the pipeline's upright stage found for it.
``--window P``: synthetic scenes get short, real-like tracks (view windows, memposer.data.tracks)
with probability P.
Prints, per set, median relative-rotation / translation-direction errors over image pairs (degrees)
and the share of pairs under 5 / 15 degrees, for: memposer, identity, rotation averaging (the
classical chain; images its pair graph does not reach keep the identity). ``rot_linked_median``: the
rotation median over the pairs that some chain of images sharing >= 5 tracks links (``linked_share``
of all pairs); with short tracks the others cannot be related by any method.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from memposer.baselines import identity_poses, rotation_averaging_poses
from memposer.data.tracks import default_conf as scene_defaults, sample_scene
from memposer.geometry import camera_center, roll_matrix
from memposer.models.tta import roll_keypoints
from memposer.training.metrics import relative_errors_deg

HELDOUT_KEY = 9_000_017  # neither training (seed, epoch, rank, i) nor validation (7_000_001) uses it


def pair_errors_deg(R, t, R_gt, t_gt) -> Dict[str, np.ndarray]:
    """Relative-pose errors (degrees) of all pairs i < j of one scene; ``t`` None skips directions."""
    def batch(x):
        return torch.as_tensor(np.asarray(x), dtype=torch.float64)[None]

    mask = torch.ones(1, len(R_gt), dtype=torch.bool)
    out = relative_errors_deg(batch(R), batch(t if t is not None else np.zeros_like(t_gt)), batch(R_gt),
                              batch(t_gt), mask)
    if t is None:
        del out["tdir"]
    return out


def linked_pairs(vis: np.ndarray, min_common: int = 5) -> np.ndarray:
    """For the pairs i < j (``relative_errors_deg``'s order): both images in one connected part of the
    graph whose edges are pairs sharing >= ``min_common`` tracks. No method can relate the others."""
    from scipy.sparse.csgraph import connected_components  # noqa: PLC0415
    common = vis.astype(np.int32) @ vis.T.astype(np.int32)
    _, label = connected_components(common >= min_common, directed=False)
    i, j = np.triu_indices(len(vis), 1)
    return label[i] == label[j]


def evaluate_scene(model, obs, vis, R_gt, t_gt, ra: bool = True, ra_tracks=None,
                   exif=None) -> Dict[str, Dict[str, np.ndarray]]:
    """``exif`` (N,) bool: which focal priors came from EXIF (for models with ``exif_input``)."""
    out = evaluate_methods(model, obs, vis, R_gt, t_gt, ra, ra_tracks, exif)
    linked = linked_pairs(vis if ra_tracks is None else ra_tracks[1])
    for errs in out.values():
        errs["rot_linked"] = errs["rot"][linked]
    return out


def evaluate_methods(model, obs, vis, R_gt, t_gt, ra: bool = True, ra_tracks=None,
                     exif=None) -> Dict[str, Dict[str, np.ndarray]]:
    out = {}
    t0 = time.perf_counter()
    pred = model.predict(torch.from_numpy(obs), torch.from_numpy(vis), exif=exif)
    out["memposer"] = pair_errors_deg(pred["R"].double().cpu().numpy(), pred["t"].double().cpu().numpy(), R_gt, t_gt)
    out["memposer"]["seconds"] = np.array([time.perf_counter() - t0])
    Ri, ti = identity_poses(len(R_gt))
    out["identity"] = pair_errors_deg(Ri, ti, R_gt, t_gt)
    if ra:
        o, v = ra_tracks if ra_tracks is not None else (obs, vis)
        res = rotation_averaging_poses(o, v)
        out["rotation averaging"] = pair_errors_deg(res["R"], None, R_gt, t_gt)
        out["rotation averaging"]["reached"] = res["reached"].astype(float)
        if model.conf["refine_iters"] > 0:
            init = ra_init(pred["R"].double().numpy(), pred["t"].double().numpy(), res["R"], res["reached"])
            p = model.predict(torch.from_numpy(obs), torch.from_numpy(vis), init=init, exif=exif)
            out["memposer from RA"] = pair_errors_deg(p["R"].double().numpy(), p["t"].double().numpy(), R_gt, t_gt)
    return out


def ra_init(R, t, R_ra, reached):
    """Refinement start from rotation averaging: its rotations, MemPoser's centres rotated into its gauge.

    Images rotation averaging did not reach keep MemPoser's rotation (in the same gauge)."""
    from memposer.models.refine import project_so3  # noqa: PLC0415
    c = camera_center(R, t)
    if not reached.any():
        return R, c
    # world change G: R_ra ~ R G^T, so G^T = chordal mean of R_i^T R_ra_i over the reached images
    Gt = project_so3(torch.from_numpy(np.einsum("nji,njk->ik", R[reached], R_ra[reached]))).numpy()
    R0 = np.where(reached[:, None, None], R_ra, R @ Gt)
    return R0, c @ Gt  # c' = G c


def summarize(per_scene: List[Dict[str, Dict[str, np.ndarray]]]) -> Dict[str, Dict[str, float]]:
    cat = defaultdict(lambda: defaultdict(list))
    for sc in per_scene:
        for method, errs in sc.items():
            for k, v in errs.items():
                cat[method][k].append(v)
    table = {}
    for method, d in cat.items():
        row = {}
        for k in ("rot", "tdir", "rot_linked"):
            if k in d:
                e = np.concatenate(d[k])
                row[f"{k}_median"] = float(np.median(e))
                row[f"{k}_acc5"] = float((e < 5).mean())
                row[f"{k}_acc15"] = float((e < 15).mean())
        if "reached" in d:
            row["images_reached"] = float(np.concatenate(d["reached"]).mean())
        if "seconds" in d:
            row["seconds_per_scene"] = float(np.mean(np.concatenate(d["seconds"])))
        row["pairs"] = int(sum(len(x) for x in d["rot"]))
        row["linked_share"] = float(sum(len(x) for x in d["rot_linked"]) / max(row["pairs"], 1))
        table[method] = row
    return table


def print_table(title: str, table: Dict[str, Dict[str, float]]) -> None:
    print(f"\n{title}")
    cols = ["rot_median", "rot_acc5", "rot_acc15", "tdir_median", "tdir_acc5", "rot_linked_median", "linked_share", "pairs"]
    w = {c: max(13, len(c) + 2) for c in cols}
    print(f"{'method':<20}" + "".join(f"{c:>{w[c]}}" for c in cols))
    for method, row in table.items():
        cells = [f"{row[c]:{w[c]}.3f}" if c in row and c != "pairs" else f"{row.get(c, '-'):>{w[c]}}" for c in cols]
        print(f"{method:<20}" + "".join(cells))


def synthetic(model, n: int, run: int, conf: dict, ra: bool) -> Dict[str, Dict[str, float]]:
    rng = np.random.default_rng(np.random.SeedSequence([HELDOUT_KEY, run]))
    scenes = [sample_scene(rng, conf) for _ in range(n)]
    return summarize([evaluate_scene(model, s["obs"], s["vis"], s["R"].astype(float), s["t"].astype(float), ra,
                                     exif=s["exif"]) for s in scenes])


def real(model, split: Path, work: Path, max_tracks: int, ra: bool,
         focal: Optional[Dict[str, float]] = None, reproject: bool = False,
         upright: bool = False, turns: bool = False, rolls: int = 1,
         margin: float = 0.8) -> Dict[str, Dict[str, Dict[str, float]]]:
    """``focal`` {scene: focal / long side}: normalise that scene's keypoints with it, not the database's prior.
    ``reproject``: also the ``inliers`` and ``reprojected`` sets of ``reprojected_sets`` (with a
    wrong focal the triangulation is off too, so give ``focal`` where the database's is a guess).
    ``upright``: every set also with each camera rolled by ``upright_rolls`` (keypoints and poses).
    ``turns``: turn each image's keypoints by the quarter turns its features were extracted in (the
    pipeline's upright stage, read from ``WORK/<dataset>/features-*.h5``) before the network, with
    ``rolls`` whole-scene rolls on top (``memposer.models.tta``)."""
    from memposer.data.imc import read_poses  # noqa: PLC0415
    from memposer.pipeline.tracks import cluster_tracks  # noqa: PLC0415
    import pycolmap  # noqa: PLC0415

    labels = read_poses(split.parent / f"{split.name}_labels.csv")
    scenes = defaultdict(list)
    for r in labels:
        scenes[(r.dataset, r.scene)].append(r)
    out = {}
    for (ds, sc), recs in sorted(scenes.items()):
        db = work / ds / "database.db"
        if not db.is_file():
            print(f"{ds}/{sc}: no database at {db}; run infer.py --work {work} first", file=sys.stderr)
            continue
        d = pycolmap.Database.open(str(db))
        have = {im.name for im in d.read_all_images()}
        d.close()
        recs = [r for r in recs if r.image in have and r.R is not None]
        if len(recs) < 3:  # the outliers, or a scene the run did not keep
            continue
        names = [r.image for r in recs]
        f = None
        if focal and sc in focal:
            d = pycolmap.Database.open(str(db))
            cams = {c.camera_id: c for c in d.read_all_cameras()}
            f = {im.name: focal[sc] * max(cams[im.camera_id].width, cams[im.camera_id].height)
                 for im in d.read_all_images() if im.name in names}
            d.close()
        tr = cluster_tracks(db, names, {"max_tracks": max_tracks}, f)
        if turns:
            from memposer.models.tta import RolledModel  # noqa: PLC0415
            from memposer.pipeline.predict import features_file  # noqa: PLC0415
            from memposer.pipeline.upright import read_turns  # noqa: PLC0415
            feats = features_file(work / ds)  # the one the pipeline's predictor reads
            k = read_turns(feats, names) if feats else np.zeros(len(names), int)
            print(f"{ds}/{sc}: quarter turns {np.bincount(k % 4, minlength=4).tolist()} from "
                  f"{feats.name if feats else 'nowhere (no features file)'}")
            model = RolledModel(model, rolls, margin, k)
        full = cluster_tracks(db, names, {"max_tracks": 10 ** 6}, f) if ra else None
        R_gt = np.stack([r.R for r in recs])
        t_gt = np.stack([r.t for r in recs])
        title = f"{ds}/{sc} ({len(names)} images, {tr.obs.shape[1]} tracks)"
        if not reproject and not upright:
            res = evaluate_scene(model, tr.obs, tr.vis, R_gt, t_gt, ra, (full.obs, full.vis) if ra else None, tr.exif)
            out[title] = summarize([res])
            continue
        sets = reprojected_sets(tr.obs, tr.vis, R_gt, t_gt) if reproject else {"observed": (tr.obs, tr.vis)}
        Rz = upright_rolls(R_gt, t_gt) if upright else None
        for kind, (o, v) in sets.items():
            # rotation averaging on the same tracks, so both methods see what the network sees
            out[f"{title}, {kind}"] = summarize([evaluate_scene(model, o, v, R_gt, t_gt, ra, exif=tr.exif)])
            if upright:  # a roll about the optical axis turns the normalised keypoints in the image plane
                o2 = roll_keypoints(o, v, Rz).astype(np.float32)
                out[f"{title}, {kind}, upright"] = summarize([evaluate_scene(
                    model, o2, v, Rz @ R_gt, np.einsum("nij,nj->ni", Rz, t_gt), ra, exif=tr.exif)])
    return out


def triangulate_known(obs: np.ndarray, vis: np.ndarray, R: np.ndarray, t: np.ndarray, use=None):
    """Each track's 3D point from known poses (linear least squares on normalised keypoints, over the
    observations in ``use``, default all of ``vis``).

    Returns ``X`` (P, 3), ``resid`` (N, P) angle in degrees between each observation's ray and the
    point's direction in that camera (inf where unobserved or behind the camera)."""
    n, p = vis.shape
    x = np.where(vis[..., None], obs, 0.0).astype(np.float64)
    # x * (r3 X + t3) - (r1 X + t1) = 0 and the same for y: two rows per observation
    A = x[..., :, None] * R[:, None, 2:3, :] - R[:, None, :2, :]            # (N, P, 2, 3)
    b = t[:, None, :2] - x * t[:, None, 2:3]                                # (N, P, 2)
    w = vis if use is None else use
    A, b = A * w[..., None, None], b * w[..., None]
    AtA = np.einsum("npki,npkj->pij", A, A) + 1e-9 * np.eye(3)
    X = np.linalg.solve(AtA, np.einsum("npki,npk->pi", A, b)[..., None])[..., 0]
    Xc = np.einsum("nij,pj->npi", R, X) + t[:, None]                       # (N, P, 3)
    ray = np.concatenate([x, np.ones((n, p, 1))], -1)
    cos = (Xc * ray).sum(-1) / (np.linalg.norm(Xc, axis=-1) * np.linalg.norm(ray, axis=-1) + 1e-12)
    resid = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    resid = np.where(vis & (Xc[..., 2] > 0), resid, np.inf)
    return X, np.where(vis, resid, np.inf), Xc


def known_pose_inliers(obs, vis, R_gt, t_gt, max_deg: float = 0.5):
    """(N, P) observations within ``max_deg`` of their track's point triangulated from the known poses
    (tracks left with fewer than two: none), and the camera coordinates of those points (N, P, 3).
    With two observations this is only an epipolar check, as two-view verification is."""
    ok = vis
    for thr in (30.0, 10.0, 3.0, 1.0, max_deg, max_deg):  # a wrong match pulls the linear point: drop, solve again
        _, resid, Xc = triangulate_known(obs, vis, R_gt, t_gt, ok)
        ok = resid < thr
        ok &= ok.sum(0) >= 2  # one ray fits any point on it
    return ok, Xc


def reprojected_sets(obs, vis, R_gt, t_gt, max_deg: float = 0.5) -> Dict[str, tuple]:
    """The cluster's tracks three ways, to separate the scene's layout from its match noise:
    ``observed`` as matched; ``inliers``: the ``known_pose_inliers`` (tracks left with < 2 dropped);
    ``reprojected``: those inliers moved onto the exact projections of their point."""
    ok, Xc = known_pose_inliers(obs, vis, R_gt, t_gt, max_deg)
    keep = ok.sum(0) >= 2
    ok = ok[:, keep]
    inl = np.where(ok[..., None], obs[:, keep], 0).astype(np.float32)
    exact = np.where(ok[..., None], Xc[:, keep, :2] / np.maximum(Xc[:, keep, 2:], 1e-9), 0).astype(np.float32)
    share = float(ok.sum() / max(vis.sum(), 1))
    return {"observed": (obs, vis), f"inliers ({share:.0%} of observations)": (inl, ok),
            "reprojected": (exact, ok)}


def upright_rolls(R_gt: np.ndarray, t_gt: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rolls about each camera's optical axis that turn the normal of the plane through the
    camera centres (a turntable's axis) to image-up: the scene as if shot with the camera upright."""
    c = camera_center(R_gt, t_gt)
    normal = np.linalg.svd(c - c.mean(0))[2][2]
    u = np.einsum("nij,j->ni", R_gt, normal)        # the axis in each camera's coordinates
    return roll_matrix(np.arctan2(-u[:, 0], -u[:, 1]))  # the roll that brings it to -y (image up)


def reference(model, model_dir: Path, every: int, run: int, max_images: int, max_tracks: int,
              ra: bool, focal_prior: bool = False) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Errors on a COLMAP model's own tracks: observed keypoints, and the 3D points reprojected exactly.

    ``focal_prior``: observed keypoints normalised as the pipeline does without EXIF (image centre,
    1.2 x the long side), so the model also has to cope with the wrong focal; the exact reprojections
    are scaled by the same ratio."""
    import pycolmap  # noqa: PLC0415

    from memposer.colmap import make_camera  # noqa: PLC0415
    from memposer.pipeline.tracks import default_conf as track_defaults, select_tracks  # noqa: PLC0415

    rec = pycolmap.Reconstruction(str(model_dir))
    images = sorted(rec.images.values(), key=lambda im: im.name)[run::every][:max_images]
    pids = {p: k for k, p in enumerate(rec.points3D)}
    xyz = np.stack([rec.points3D[p].xyz for p in pids])
    n, p = len(images), len(pids)
    observed, exact = np.zeros((n, p, 2)), np.zeros((n, p, 2))
    vis = np.zeros((n, p), bool)
    for i, im in enumerate(images):
        cam = rec.cameras[im.camera_id]
        pts = [(pids[q.point3D_id], q.xy) for q in im.points2D if q.has_point3D()]
        j = np.array([a for a, _ in pts], np.int64)
        xy = np.array([b for _, b in pts], np.float64)
        X = (im.cam_from_world().rotation.matrix() @ xyz[j].T).T + im.cam_from_world().translation
        exact[i, j] = X[:, :2] / X[:, 2:]
        if focal_prior:
            prior = make_camera(cam.width, cam.height).params[0]  # COLMAP's prior without EXIF
            observed[i, j] = (xy - np.array([cam.width, cam.height]) / 2) / prior
            exact[i, j] *= cam.focal_length / prior
        else:
            observed[i, j] = cam.cam_from_img(xy)
        vis[i, j] = True
    keep = select_tracks(vis, {**track_defaults, "max_tracks": max_tracks})
    vis = vis[:, keep]
    R_gt = np.stack([im.cam_from_world().rotation.matrix() for im in images])
    t_gt = np.stack([im.cam_from_world().translation for im in images])
    out = {}
    for kind, obs in (("observed", observed), ("reprojected", exact)):
        o = np.where(vis[..., None], obs[:, keep], 0).astype(np.float32)
        out[f"{model_dir} every {every} from {run}, {n} images, {vis.shape[1]} tracks, {kind}"
            f"{', focal prior' if focal_prior else ''}"] = summarize(
            [evaluate_scene(model, o, vis, R_gt, t_gt, ra, exif=np.full(n, not focal_prior))])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/memposer-tracks.safetensors")
    p.add_argument("--synthetic", type=int, default=0, help="held-out synthetic scenes per run")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--cameras", type=int, nargs=2, default=scene_defaults["cameras"])
    p.add_argument("--tracks", type=int, default=scene_defaults["tracks"])
    p.add_argument("--background", type=float, default=0.0, help="share of far background points")
    p.add_argument("--distance-scale", type=float, nargs=2, default=[1.0, 1.0], help="camera distances x this")
    p.add_argument("--window", type=float, default=0.0, help="share of synthetic scenes with view windows")
    p.add_argument("--view-window", type=float, nargs=2, default=scene_defaults["view_window"], help="degrees")
    p.add_argument("--layouts", nargs="+", metavar="NAME=W", help="scene layout mix, e.g. handheld=1")
    p.add_argument("--focal-range", type=float, nargs=2, default=scene_defaults["focal_range"],
                   help="true focal / long side")
    p.add_argument("--exif", type=float, default=scene_defaults["exif"],
                   help="share of cameras with a near-true focal prior (0: none, as a folder without EXIF)")
    p.add_argument("--shared-camera", type=float, default=0.0, help="share of scenes whose cameras share one focal")
    p.add_argument("--roll-global", type=float, default=0.0,
                   help="share of scenes whose cameras all get one extra roll (0-360 degrees)")
    p.add_argument("--focal-prior", action="store_true",
                   help="with --reference: normalise keypoints by COLMAP's prior (1.2 x long side), not the true intrinsics")
    p.add_argument("--reference", type=Path, help="a COLMAP model: evaluate on its own tracks")
    p.add_argument("--every", type=int, default=3, help="with --reference: every k-th image")
    p.add_argument("--max-images", type=int, default=24, help="with --reference")
    p.add_argument("--real", type=Path, help="labelled competition split (train/ beside train_labels.csv)")
    p.add_argument("--work", type=Path, help="infer.py work folder of that split")
    p.add_argument("--focal", nargs="+", metavar="SCENE=F", default=[],
                   help="with --real: that scene's true focal / long side instead of the database's prior "
                        "(middlebury: temple=2.4 dino=5.2)")
    p.add_argument("--reproject", action="store_true",
                   help="with --real: also each cluster's inlier observations (within 0.5 deg of the point "
                        "triangulated from the reference poses) and their exact reprojections")
    p.add_argument("--upright", action="store_true",
                   help="with --real: also every set with each camera rolled about its axis so that the "
                        "normal of the camera centres' plane (a turntable's axis) is image-up")
    p.add_argument("--roll-tta", type=int, default=1, metavar="K",
                   help="predict under K whole-scene rolls, keep the one the tracks fit best (memposer.models.tta)")
    p.add_argument("--roll-margin", type=float, default=0.8, help="with --roll-tta: see predict_rolled")
    p.add_argument("--turns", action="store_true",
                   help="with --real: turn each image's keypoints by its upright-stage quarter turns first")
    p.add_argument("--max-tracks", type=int, nargs="+", default=[1024])
    p.add_argument("--no-ra", action="store_true", help="skip the rotation-averaging baseline")
    p.add_argument("--json", type=Path, help="write the tables here")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from memposer.models.checkpoint import load_checkpoint  # noqa: PLC0415
    model = load_checkpoint(a.checkpoint)
    if a.roll_tta > 1:
        from memposer.models.tta import RolledModel  # noqa: PLC0415
        model = RolledModel(model, a.roll_tta, a.roll_margin)
    results = {}
    conf = {**scene_defaults, "cameras": a.cameras, "tracks": a.tracks, "background": a.background,
            "distance_scale": a.distance_scale, "view_window_p": a.window, "view_window": a.view_window,
            "focal_range": a.focal_range, "exif": a.exif, "shared_camera": a.shared_camera,
            "roll_global": a.roll_global}
    if a.layouts:
        conf["layouts"] = {k: float(w) for k, w in (x.split("=") for x in a.layouts)}
    for run in range(a.runs if a.synthetic else 0):
        t = synthetic(model, a.synthetic, run, conf, not a.no_ra)
        results[f"synthetic run {run}"] = t
        print_table(f"synthetic held-out, run {run}: {a.synthetic} scenes, cameras {a.cameras}, {a.tracks} tracks, "
                    f"background {a.background}, distance x{a.distance_scale}, view windows {a.window}, layouts {conf['layouts']}, "
                    f"focal {a.focal_range}, exif {a.exif}, shared camera {a.shared_camera}, global roll {a.roll_global}", t)
    for run in range(a.runs if a.reference else 0):
        for mt in a.max_tracks:
            for scene, t in reference(model, a.reference, a.every, run, a.max_images, mt, not a.no_ra,
                                      a.focal_prior).items():
                results[scene] = t
                print_table(scene, t)
    if a.real:
        for mt in a.max_tracks:
            focal = {k: float(v) for k, v in (x.split("=") for x in a.focal)}
            for scene, t in real(model, a.real, a.work, mt, not a.no_ra, focal, a.reproject, a.upright, a.turns, a.roll_tta,
                                   a.roll_margin).items():
                results[f"{scene} max_tracks {mt}"] = t
                print_table(f"{scene}, max_tracks {mt}", t)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
