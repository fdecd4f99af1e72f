"""Stage 8: camera poses per cluster, by one of three paths (``poses:``).

- ``colmap``: pycolmap's incremental (or global) mapper on the cluster's images;
- ``memposer``: the network's poses alone (no geometry);
- ``seeded``: the network's poses seed a COLMAP reconstruction refined by bundle adjustment
  (``memposer.pipeline.seeding``); the mapper runs too and the better model by
  ``seeding.better_of`` is kept, so seeding never makes a cluster worse by that criterion.

Every model found becomes its own cluster (COLMAP splitting a cluster is how look-alike scenes
that clustering merged get separated again). Poses are world-to-camera ``(R, t)``.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycolmap
from tqdm import tqdm

from memposer import colmap
from memposer.colmap import Pose
from memposer.pipeline import fill, intrinsics, seeding, split

log = logging.getLogger(__name__)

# A pose predictor: (image names of one cluster, COLMAP database with their verified matches)
# -> (R (N,3,3), t (N,3), confidence (N,)); confidence 0 = no pose (e.g. the image has no track).
Predictor = Callable[[List[str], Path], Tuple[np.ndarray, np.ndarray, np.ndarray]]

SHARED_WITH_SEEDING = ("seed", "min_num_matches")
default_conf = {
    "poses": "colmap",  # colmap | memposer | seeded
    # incremental | global | best (both, the better largest model by seeding.better_of: more images
    # registered, then observations and reprojection error); docs/results.md, "Two mappers", "Both mappers"
    "mapper": "best",
    # global mapper: its models' poses refined as seeds by seeding.refine_model (cameras from the priors)
    "global_refine": True,
    # best: skip the incremental run where the global model registers every image (faster; but a
    # complete global model can be wrong where the incremental one is right: docs/results.md, "Both mappers")
    "best_skip_complete": False,
    # best: where the two models' cameras disagree with the verified pairs' own geometry by clearly
    # different amounts (seeding.pair_direction_error over the images both registered: at least
    # margin_deg and ratio x apart), the one that agrees wins; otherwise seeding.better_of decides
    "best_pair_check": {"enabled": True, "min_inliers": 30, "cap_deg": 30.0, "margin_deg": 0.5, "ratio": 1.3},
    "num_threads": -1,  # 1 makes COLMAP's output reproducible
    "seed": 0,
    "min_num_matches": 15,  # also the seeded path's (seeding reads it from here)
    "min_model_size": 3,  # smaller models are dropped, whichever path made them
    "max_num_models": 50,
    "max_runtime_seconds": 0,  # per cluster, incremental mapper only; 0 = no limit
    # Clusters reconstructed at once, each in its own process; 0 = one per CPU core. With
    # num_threads -1 the cores are shared out between them. Processes are spawned, so a script
    # calling the pipeline needs the usual `if __name__ == "__main__":` guard.
    "workers": 1,
    "structure_less_fallback": False,  # pycolmap 4's slow structure-less registration (incremental only)
    # the seeded path's own settings; its seed and min_num_matches are this section's
    "seeding": {k: v for k, v in seeding.default_conf.items() if k not in SHARED_WITH_SEEDING},
    # seeded path: images no model holds get the network's pose in the model's gauge (pipeline/fill.py)
    "fill_unregistered": False,
    "fill": dict(fill.default_conf),
    # memposer / seeded paths: the network under this many whole-scene rolls, keeping the answer the
    # two-view rotations agree with; with predict_turns each image's keypoints first turned by the
    # upright stage's quarter turn (memposer/models/tta.py; docs/results.md, "Temple: its layout")
    "predict_rolls": 1,
    "predict_turns": False,
    # models joined on duplicate (symmetric) structure are split, the joining pairs dropped and the
    # cluster mapped again (pipeline/split.py)
    "split": dict(split.default_conf),
    # each mapper model adjusted once more, and one camera shared by same-size images without a focal
    # prior where the fit allows it (pipeline/intrinsics.py; docs/results.md, "One camera")
    "intrinsics": dict(intrinsics.default_conf),
    # each model also as a COLMAP model (cameras/images/points3D.bin) for --export and the report's 3D view
    "write_models": True,
}


@dataclass
class ClusterResult:
    models: List[Dict[str, Pose]]  # one {name: pose} per reconstructed model, largest first
    path: str  # which path produced them: colmap | memposer | seeded
    stats: Dict[str, float] = field(default_factory=dict)
    # with write_models: per model, the folder of its COLMAP model (same images and poses); None
    # where writing failed (the poses are kept either way)
    model_dirs: List[Optional[str]] = field(default_factory=list)
    # when and where it ran: start / end (seconds since the epoch) and the worker's process id
    timing: Dict[str, float] = field(default_factory=dict)


Sources = List[Optional[pycolmap.Reconstruction]]  # per model, the reconstruction it came from


def _seeded(database_path: Path, names: Sequence[str], pred: Dict[str, Pose], mapped, conf: dict,
            pred_conf: Dict[str, float]) -> Tuple[ClusterResult, Sources]:
    res, sources = _seeded_models(database_path, names, pred, mapped, conf)
    if conf["fill_unregistered"]:
        models, st = fill.fill_unregistered(res.models, pred, pred_conf, conf["fill"])
        res = ClusterResult(models, res.path, {**res.stats, **{f"fill_{k}": float(v) for k, v in st.items()}})
    return res, sources


def _seeding_conf(conf: dict) -> dict:
    """The seeded reconstruction's settings: the ``seeding`` section plus this section's shared keys."""
    return {**conf["seeding"], **{k: conf[k] for k in SHARED_WITH_SEEDING}}


def _seeded_models(database_path: Path, names: Sequence[str], pred: Dict[str, Pose], mapped,
                   conf: dict) -> Tuple[ClusterResult, Sources]:
    seeded_names = [n for n in names if n in pred]
    R = np.stack([pred[n][0] for n in seeded_names])
    t = np.stack([pred[n][1] for n in seeded_names])
    res = seeding.seed_reconstruction(database_path, seeded_names, R, t, _seeding_conf(conf), all_names=names)
    stats = {f"seeded_{k}": float(v) for k, v in seeding.reconstruction_quality(res.reconstruction).items()}
    stats.update({f"colmap_{k}": float(v)
                  for k, v in seeding.reconstruction_quality(mapped[0] if mapped else None).items()})
    # Each mapper model against the seeded model over its own images: the mapper's split stays.
    sc = conf["seeding"]
    recs, choices = seeding.best_per_model(res.reconstruction, mapped, sc["keep_min_observation_ratio"],
                                           sc["keep_max_reproj_ratio"])
    stats["seeded_models_kept"] = float(choices.count("seeded"))
    models, sources = _disjoint_models(recs, conf["min_model_size"])
    return ClusterResult(models, "seeded" if "seeded" in choices else "colmap", stats), sources


def _disjoint_models(recs: Sequence[pycolmap.Reconstruction], min_size: int = 1) -> Tuple[List[Dict[str, Pose]], Sources]:
    """``disjoint`` poses of ``recs`` and, per model kept, the reconstruction it came from."""
    kept = _disjoint_index([colmap.poses_of(r) for r in recs], min_size)
    return [m for _, m in kept], [recs[i] for i, _ in kept]


def _disjoint_index(models: List[Dict[str, Pose]], min_size: int) -> List[Tuple[int, Dict[str, Pose]]]:
    taken: set = set()
    out = []
    for i, m in enumerate(models):
        m = {k: v for k, v in m.items() if k not in taken}
        if len(m) >= min_size:
            out.append((i, m))
            taken |= set(m)
    return out


def disjoint(models: List[Dict[str, Pose]], min_size: int = 1) -> List[Dict[str, Pose]]:
    """Each image in one model only: COLMAP's models may overlap; an image stays in the first
    (largest) model that has it, and models left smaller than ``min_size`` are dropped."""
    return [m for _, m in _disjoint_index(models, min_size)]


class Predicted(dict):
    """``{name: pose}`` of the images the predictor placed (confidence > 0), with ``.conf`` per name."""

    conf: Dict[str, float]


def predict_poses(names: Sequence[str], database_path: Path | str, predictor: Predictor) -> Predicted:
    """The predictor's pose for every image of one cluster that it gives one (confidence > 0)."""
    R, t, conf = predictor(list(names), Path(database_path))
    out = Predicted({n: (R[i], t[i]) for i, n in enumerate(names) if conf[i] > 0})
    out.conf = {n: float(conf[i]) for i, n in enumerate(names) if conf[i] > 0}
    return out


def _check_mode(conf: dict, has_poses: bool) -> str:
    mode = conf["poses"]
    if mode not in ("colmap", "memposer", "seeded"):
        raise ValueError(f"unknown poses path {mode!r} (colmap|memposer|seeded)")
    if mode != "colmap" and not has_poses:
        raise ValueError(f"poses: {mode} needs a MemPoser checkpoint (--checkpoint)")
    return mode


def reconstruct_cluster(names: Sequence[str], database_path: Path | str, image_dir: Path | str,
                        out_dir: Path | str, conf: Optional[dict] = None,
                        predictor: Optional[Predictor] = None,
                        pred: Optional[Dict[str, Pose]] = None) -> ClusterResult:
    """Poses for one cluster's images by the configured path; ``pred`` are the network's poses
    when already predicted, else ``predictor`` makes them."""
    conf = {**default_conf, **(conf or {})}
    database_path, image_dir, out_dir = Path(database_path), Path(image_dir), Path(out_dir)
    mode = _check_mode(conf, predictor is not None or pred is not None)
    if mode == "colmap":
        pred = {}
    elif pred is None:
        pred = predict_poses(names, database_path, predictor)
    if mode == "memposer":
        res = ClusterResult([pred], "memposer", {"registered": float(len(pred))})
        return _with_model_dirs(res, [None] * len(res.models), database_path, out_dir, conf)
    mapped, stats = map_cluster(database_path, image_dir, out_dir, names, conf)
    if conf["split"]["enabled"]:
        mapped, split_stats = _split_checked(mapped, database_path, image_dir, out_dir, names, conf)
        stats.update(split_stats)
    mapped, intr_stats = _intrinsics_refined(mapped, conf)
    stats.update(intr_stats)
    if mode == "seeded" and len(pred) >= 3:
        res, sources = _seeded(database_path, names, pred, mapped, conf, getattr(pred, "conf", {n: 1.0 for n in pred}))
    else:
        models, sources = _disjoint_models(mapped, conf["min_model_size"])
        res = ClusterResult(models, "colmap", {"registered": float(sum(map(len, models)))})
    res.stats.update(stats)
    return _with_model_dirs(res, sources, database_path, out_dir, conf)


def _intrinsics_refined(mapped: List[pycolmap.Reconstruction], conf: dict
                        ) -> Tuple[List[pycolmap.Reconstruction], Dict[str, float]]:
    """Each model of at least ``min_model_size`` images by ``intrinsics.refine``; stats: how many
    models kept one shared camera, and how many images share one in models that share partly."""
    out, shared, partial = [], 0.0, 0.0
    for m in mapped:
        if m.num_reg_images() >= conf["min_model_size"]:
            m, st = intrinsics.refine(m, conf["intrinsics"], int(conf["num_threads"]))
            shared += st.get("intrinsics_shared", 0.0)
            partial += st.get("intrinsics_partial_images", 0.0)
        out.append(m)
    if not conf["intrinsics"]["share"]:
        return out, {}
    return out, {"intrinsics_shared_models": shared, "intrinsics_partial_images": partial}


def map_cluster(database_path: Path, image_dir: Path, out_dir: Path, names: Sequence[str],
                conf: dict) -> Tuple[List[pycolmap.Reconstruction], Dict[str, float]]:
    """The mapper's models for one cluster, largest first, by ``conf["mapper"]``.

    ``best``: the global mapper (refined, ``global_refine``) and the incremental mapper; the better
    largest model by ``seeding.better_of`` is kept (more images registered, then observations and
    reprojection error). With ``best_skip_complete`` the incremental run is skipped where the global
    model registers every image. Stats say which won."""
    mapper = conf["mapper"]
    if mapper == "incremental":
        return colmap.run_mapper(database_path, image_dir, out_dir, names, conf), {}
    # the global mapper has neither a time limit nor the structure-less fallback (best: those are the
    # incremental run's settings; global: checks.check_choices refused them already)
    try:
        glo = colmap.run_mapper(database_path, image_dir, out_dir, names, {**conf, **colmap.INCREMENTAL_ONLY, "mapper": "global"})
        if conf["global_refine"]:
            glo = _refined(database_path, glo, names, conf)
    except Exception as e:  # best: the incremental mapper still maps the cluster
        if mapper == "global":
            raise
        log.warning("global mapper failed on %d images (%s: %s); mapping them incrementally", len(names), type(e).__name__, e)
        glo = []
    if mapper == "global" or (conf["best_skip_complete"] and glo and glo[0].num_reg_images() >= len(names)):
        return glo, {"mapper_global": 1.0} if mapper == "best" else {}
    inc = colmap.run_mapper(database_path, image_dir, out_dir / "incremental", names, {**conf, "mapper": "incremental"})
    won, why = _global_wins(glo[0] if glo else None, inc[0] if inc else None, database_path, conf)
    log.info("mapper best: global %s vs incremental %s images -> %s (%s)", [m.num_reg_images() for m in glo],
             [m.num_reg_images() for m in inc], "global" if won else "incremental", why)
    return (glo if won else inc), {"mapper_global": float(won)}


def _global_wins(glo: Optional[pycolmap.Reconstruction], inc: Optional[pycolmap.Reconstruction],
                 database_path: Path, conf: dict) -> Tuple[bool, str]:
    """Whether ``mapper: best`` keeps the global model, and why: by the pair check where it is
    decisive (``best_pair_check``), else by ``seeding.better_of``."""
    pc = conf["best_pair_check"]
    if glo is not None and inc is not None and pc["enabled"]:
        common = seeding.registered_names(glo) & seeding.registered_names(inc)
        e = [seeding.pair_direction_error(r, database_path, sorted(common), pc["min_inliers"], pc["cap_deg"], conf["seed"])
             for r in (glo, inc)]
        if None not in e:
            lo, hi = sorted(e)
            why = f"pair directions off by {e[0]:.2f} vs {e[1]:.2f} deg"
            if hi >= lo + pc["margin_deg"] and hi >= pc["ratio"] * lo:
                return e[0] < e[1], why
            why += ", undecided"
        else:
            why = "too few pairs to check"
    else:
        why = "one model"
    # better_of names its first argument "seeded": here that is the global mapper's model
    return seeding.better_of(glo, inc) == "seeded", why + "; by matches explained"


def _refined(database_path: Path, models: List[pycolmap.Reconstruction], names: Sequence[str],
             conf: dict) -> List[pycolmap.Reconstruction]:
    """Each model refined by ``seeding.refine_model`` on the cluster's images no earlier model holds
    (the original where refinement keeps nothing), largest first."""
    out, taken = [], set()
    for m in models:
        free = [n for n in names if n not in taken]
        r = seeding.refine_model(database_path, m, free, _seeding_conf(conf))
        r = r if r is not None and r.num_reg_images() >= min(3, m.num_reg_images()) else m
        taken |= seeding.registered_names(r)
        out.append(r)
    return sorted(out, key=lambda r: -r.num_reg_images())


def _split_checked(mapped: List[pycolmap.Reconstruction], database_path: Path, image_dir: Path, out_dir: Path,
                   names: Sequence[str], conf: dict) -> Tuple[List[pycolmap.Reconstruction], Dict[str, float]]:
    """``split.check_models`` with remapping from a copy of the database without the dropped pairs."""
    def remap(dropped, rnd: int) -> List[pycolmap.Reconstruction]:
        db = colmap.database_without_pairs(database_path, out_dir / f"split{rnd}" / "database.db", dropped)
        return map_cluster(db, image_dir, out_dir / f"split{rnd}", names, conf)[0]

    return split.check_models(mapped, conf["split"], remap, str(database_path))


def _with_model_dirs(res: ClusterResult, sources: Sources, database_path: Path, out_dir: Path,
                     conf: dict) -> ClusterResult:
    """``res`` with each model written as a COLMAP model under ``out_dir/export/<k>`` (``write_models``)."""
    if not conf["write_models"]:
        return res
    dirs: List[Optional[str]] = []
    for k, (model, source) in enumerate(zip(res.models, sources)):
        if not model:
            dirs.append(None)
            continue
        try:
            rec = colmap.model_of(model, database_path, source)
            dirs.append(str(colmap.write_model(rec, out_dir / "export" / str(k))))
        except Exception as e:  # an export problem must not cost the cluster its poses
            log.error("model %d of %d images: writing its COLMAP model failed (%s: %s)", k, len(model),
                      type(e).__name__, e)
            dirs.append(None)
    res.model_dirs = dirs
    return res


def reconstruct_clusters(clusters: Sequence[Sequence[str]], database_path: Path | str, image_dir: Path | str,
                         out_dir: Path | str, conf: Optional[dict] = None, predictor: Optional[Predictor] = None,
                         progress: bool = True, label: str = "") -> List[Optional[ClusterResult]]:
    """``reconstruct_cluster`` for every cluster (into ``out_dir/c<i>``), ``workers`` at a time.

    Results come back in cluster order whatever the scheduling, and each cluster seeds COLMAP the
    same way, so ``num_threads: 1`` output does not depend on ``workers``. A cluster that fails is
    logged and returned as ``None`` (its images become outliers); the other clusters are kept.
    """
    conf = {**default_conf, **(conf or {})}
    _check_mode(conf, predictor is not None)  # a configuration error is one error, not one per cluster
    tag = f"{label}: " if label else ""
    # The network runs here, once per cluster, so that worker processes never touch the GPU.
    preds = [predict_poses(c, database_path, predictor) if predictor is not None and conf["poses"] != "colmap" else None
             for c in clusters]
    workers = min(int(conf["workers"]) or os.cpu_count() or 1, len(clusters))
    if workers > 1:
        if int(conf["num_threads"]) <= 0:
            conf = {**conf, "num_threads": max(1, (os.cpu_count() or 1) // workers)}
        log.info("%sreconstructing %d clusters in %d processes, %d COLMAP threads each",
                 tag, len(clusters), workers, conf["num_threads"])
    results: List[Optional[ClusterResult]] = [None] * len(clusters)
    # Largest clusters first, so that a big one does not start last and run alone.
    order = sorted(range(len(clusters)), key=lambda i: -len(clusters[i]))
    bar = tqdm(total=len(clusters), desc=f"{tag}reconstruction", disable=not progress, leave=False)
    out_dir = Path(out_dir)
    args = {i: (i, clusters[i], database_path, image_dir, out_dir / f"c{i}", conf, preds[i]) for i in order}
    with _executor(workers, database_path, out_dir) as pool, bar:
        jobs = {i: pool.submit(_guarded, *args[i]) for i in order} if pool else {}
        for i in order:
            try:
                results[i] = jobs[i].result() if pool else _guarded(*args[i])
            except Exception as e:  # the worker process itself died (e.g. a crash inside COLMAP)
                log.error("%scluster %d (%d images): reconstruction process failed (%s: %s); its images become "
                          "outliers", tag, i, len(clusters[i]), type(e).__name__, e)
            if results[i] is not None:
                log.info("%scluster %d (%d images) -> %s, models of %s images", tag, i, len(clusters[i]),
                         results[i].path, [len(m) for m in results[i].models])
            bar.update()
    rows = timeline(clusters, results)
    if rows:
        longest = max(rows, key=lambda r: r["seconds"])
        log.info("%sreconstruction: %d clusters in %.1f s on %d workers; longest %.1f s (cluster %d, %d images); "
                 "%.1f s of mapping in all", tag, len(rows), max(r["end"] for r in rows), workers,
                 longest["seconds"], longest["cluster"], longest["images"], sum(r["seconds"] for r in rows))
    return results


def timeline(clusters: Sequence[Sequence[str]], results: Sequence[Optional[ClusterResult]]) -> List[Dict[str, float]]:
    """Per reconstructed cluster: index, images, start and end (s from the first start), seconds and
    worker (0, 1, ... in order of first use); the schedule ``benchmarks/pipeline.py`` draws and
    compares with its ceiling. Clusters whose reconstruction failed have no row."""
    done = [(i, r.timing) for i, r in enumerate(results) if r is not None and r.timing]
    if not done:
        return []
    t0 = min(t["start"] for _, t in done)
    workers: Dict[float, int] = {}
    for _, t in sorted(done, key=lambda d: d[1]["start"]):
        workers.setdefault(t["worker"], len(workers))
    return [{"cluster": i, "images": len(clusters[i]), "start": t["start"] - t0, "end": t["end"] - t0,
             "seconds": t["end"] - t["start"], "worker": workers[t["worker"]]} for i, t in done]


@contextmanager
def _executor(workers: int, database_path: Path | str, scratch: Path):
    """None for one worker (the caller runs the jobs itself); else a process pool whose every
    process maps from its own copy of the database: COLMAP processes opening one SQLite file at
    the same moment can fail with "No registered database factory succeeded" (seen in 1 of about
    10 runs of the pipeline test)."""
    if workers <= 1:
        yield None
        return
    ctx = multiprocessing.get_context("spawn")  # a forked child would inherit CUDA and OpenMP state
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="databases-", dir=scratch) as tmp:
        copies = ctx.Queue()
        for k in range(workers):
            copies.put(str(colmap.copy_database(database_path, Path(tmp) / f"worker{k}.db")))
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(_log_levels(), colmap.log_level(), copies)) as pool:
            yield pool


_worker_database: Optional[str] = None  # this worker process's copy of the database


def _log_levels() -> Dict[str, int]:
    """The parent's logging levels, root and memposer, for a spawned worker to copy."""
    return {"": logging.getLogger().getEffectiveLevel(), "memposer": logging.getLogger("memposer").getEffectiveLevel()}


def _worker_init(levels: Dict[str, int], glog_level: int, copies) -> None:
    global _worker_database
    _worker_database = copies.get()
    logging.basicConfig(level=levels[""], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("memposer").setLevel(levels["memposer"])
    colmap.quiet(glog_level)  # a spawned process starts with COLMAP's full log on


def _guarded(i: int, names: Sequence[str], database_path, image_dir, out_dir, conf: dict,
             pred: Optional[Dict[str, Pose]]) -> Optional[ClusterResult]:
    try:
        start = time.time()
        res = reconstruct_cluster(names, _worker_database or database_path, image_dir, out_dir, conf, pred=pred)
        res.timing = {"start": start, "end": time.time(), "worker": float(os.getpid())}
        return res
    except Exception as e:  # one cluster must not cost the dataset its other clusters
        log.error("cluster %d (%d images): reconstruction failed (%s: %s); its images become outliers",
                  i, len(names), type(e).__name__, e)
        return None
