"""The IMC2025 score of a submission: cluster association, mAA per (scene, cluster), clusterness,
the per-image table."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import numpy as np

from memposer.data.imc import OUTLIER_SCENE, PoseRecord

from .results import DatasetResult, ImageRow, Result, SceneResult
from .search import register
from .submission import camera_centers, clean_submission

log = logging.getLogger(__name__)

default_conf = {
    "inl_cf": 0.0,            # refine a triplet's inliers when more than inl_cf * best so far
    "strict_cf": -1.0,        # skip triplets of cameras within strict_cf * th for the best model
    "skip_top_thresholds": 2,  # smallest thresholds left out of mAA
    "to_dec": 3,              # cameras of the minimal model, not counted
    "chunk": 32768,           # triplets evaluated at once by the fast search
}
# The faster, inexact search of earlier challenges (``--heuristic`` of the scoring CLIs).
HEURISTIC_CONF = {"inl_cf": 0.8, "strict_cf": 0.5}


def score_submission(labels: List[PoseRecord], submission: List[PoseRecord], thresholds: Dict[str, Dict[str, List[float]]],
                     conf: Optional[dict] = None) -> Result:
    """Score a submission against labels with per-scene thresholds, as the IMC2025 metric does."""
    conf = {**default_conf, **(conf or {})}
    skip, to_dec = conf["skip_top_thresholds"], conf["to_dec"]
    by_ds: Dict[str, Dict[str, List[PoseRecord]]] = {}
    for r in labels:
        by_ds.setdefault(r.dataset, {}).setdefault(r.scene, []).append(r)
    sub_ds: Dict[str, List[PoseRecord]] = {}
    for r in submission:
        sub_ds.setdefault(r.dataset, []).append(r)
    n_th = {len(v) for ds in by_ds for sc, v in thresholds.get(ds, {}).items() if sc != OUTLIER_SCENE}
    if len(n_th) > 1:
        raise ValueError(f"the number of thresholds varies between scenes: {sorted(n_th)}")
    datasets, scenes, table = {}, {}, []
    for ds, gt_scenes in by_ds.items():
        seen = set()
        for sc, rows in gt_scenes.items():
            for r in rows:
                if r.image in seen:
                    raise ValueError(f"labels: image {r.image} appears twice in dataset {ds}")
                seen.add(r.image)
        if ds not in sub_ds:
            log.warning("dataset %s is missing from the submission; it scores 0", ds)
        rows = clean_submission(ds, seen, sub_ds.get(ds, []))
        clusters: Dict[str, List[PoseRecord]] = {}
        for r in rows:
            clusters.setdefault(r.scene, []).append(r)
        names = list(clusters)
        where = {r.image: (r.scene, r) for r in rows}
        a = b_images = n_scenes = shared_sum = size_sum = 0
        lt = 0
        for sc, gt_rows in gt_scenes.items():
            if sc == OUTLIER_SCENE:
                continue
            if sc not in thresholds.get(ds, {}):
                raise ValueError(f"no thresholds for scene {ds}/{sc}")
            th = np.asarray(thresholds[ds][sc], np.float64)
            lt = len(th) - skip
            shared = {c: [g for g in gt_rows if where.get(g.image, ("",))[0] == c] for c in names if c != OUTLIER_SCENE}
            best = max((len(v) for v in shared.values()), default=0)
            res = None
            if best > 0:
                # only clusters sharing the most images can be chosen; ties go to the higher mAA, then the first
                for c in names:
                    if c == OUTLIER_SCENE or len(shared[c]) != best:
                        continue
                    cand = _score_pair(ds, sc, c, gt_rows, shared[c], where, len(clusters[c]), th, skip, to_dec, conf)
                    if res is None or cand.mAA > res.mAA:
                        res = cand
            elif names:  # nothing shared: the official argmax falls on the first cluster
                c0 = names[0]
                if c0 == OUTLIER_SCENE:
                    res = SceneResult(ds, sc, c0, 0, 0, 0, 0.0, 0)
                else:
                    res = SceneResult(ds, sc, c0, len(gt_rows), 0, len(clusters[c0]), 0.0, 0)
            else:
                res = SceneResult(ds, sc, None, 0, 0, 0, 0.0, 0)
            scenes[(ds, sc)] = res
            a += res.n_counted
            b_images += res.n_images  # 0 when associated with an 'outliers' cluster, as the official tables
            n_scenes += 1
            shared_sum += res.n_shared
            size_sum += res.cluster_size
        b = max(0, lt * (b_images - n_scenes * to_dec))
        mAA = a / b if b > 0 else 0.0
        clusterness = shared_sum / size_sum if size_sum > 0 else 0.0
        score = 2 * mAA * clusterness / (mAA + clusterness) if mAA + clusterness > 0 else 0.0
        datasets[ds] = DatasetResult(float(score), float(mAA), float(clusterness), [s for s in gt_scenes if s != OUTLIER_SCENE])
        table.extend(_table_rows(ds, gt_scenes, where, scenes, thresholds.get(ds, {})))
    final = float(np.mean([d.score for d in datasets.values()])) if datasets else 0.0
    return Result(final, datasets, scenes, table, thresholds)


def _score_pair(ds, sc, cluster, gt_rows, shared, where, cluster_size, th, skip, to_dec, conf) -> SceneResult:
    pred = camera_centers([where[g.image][1] for g in shared])
    gt = camera_centers(shared)
    reg = register(pred, gt, th, conf["inl_cf"], conf["strict_cf"], conf["chunk"])
    ok = reg.err[reg.valid] < th                                   # (n_valid, r)
    counted = int(np.maximum(ok[:, skip:].sum(0) - to_dec, 0).sum())
    m = len(gt_rows)
    mAA = 0.0 if counted == 0 else counted / ((len(th) - skip) * (m - to_dec))
    return SceneResult(ds, sc, cluster, m, len(shared), cluster_size, float(mAA), counted,
                       [g.image for g in shared], reg, reg.alignment(int(np.argmax(th))))


def _table_rows(ds, gt_scenes, where, scenes, ths) -> List[ImageRow]:
    out = []
    for sc, rows in gt_scenes.items():
        res = scenes.get((ds, sc))
        reg = res.registration if res is not None else None
        th = np.asarray(ths.get(sc, []), np.float64)
        index = {im: i for i, im in enumerate(res.images)} if reg is not None else {}
        qm = int(np.argmax(th)) if len(th) else 0
        for g in rows:
            cluster = where[g.image][0] if g.image in where else None
            i = index.get(g.image)
            if i is None:
                out.append(ImageRow(ds, sc, g.image, cluster, float("nan"), tuple([False] * len(th)), False, False))
                continue
            e = reg.err[i]
            out.append(ImageRow(ds, sc, g.image, cluster, float(e[qm]) if np.isfinite(e[qm]) else float("nan"),
                                tuple(bool(v) for v in e < th), bool(reg.fit[i, qm]), bool(i in reg.triplet[qm])))
    return out
