"""The report's tables as plain rows: registration per scene, cluster confusion, scene summary, pairs."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from memposer.data.imc import OUTLIER_SCENE, PoseRecord
from memposer.metric import Result

NO_ROW = "(no row)"            # a labelled image the submission does not mention
NOT_LABELLED = "(not labelled)"  # a submitted image the labels do not know


def fmt(x, digits: int = 10) -> str:
    """Numbers for CSV cells: ``''`` for NaN/inf, ``%.{digits}g`` otherwise."""
    if isinstance(x, (bool, np.bool_)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}g}" if np.isfinite(x) else ""
    return "" if x is None else str(x)


def registration_table(result: Result, dataset: str, scene: str,
                       has_pose: Dict[str, bool]) -> Tuple[List[str], List[list]]:
    """Per image of a true scene: its cluster, error after the best alignment (largest threshold),
    which thresholds it passes (each with that threshold's own best model), and its role in the fit."""
    ths = result.thresholds[dataset][scene]
    header = ["image", "cluster", "has_pose", "error"] + [f"pass@{t:g}" for t in ths] + \
             ["n_passed", "used_for_alignment", "in_triplet"]
    rows = []
    for r in result.table:
        if r.dataset != dataset or r.scene != scene:
            continue
        rows.append([r.image, r.cluster if r.cluster is not None else NO_ROW, has_pose.get(r.image, False),
                     r.error, *r.passed, int(sum(r.passed)), r.used_for_alignment, r.in_triplet])
    return header, rows


def scene_summary(result: Result, dataset: str, skip: int = 2, to_dec: int = 3) -> Tuple[List[str], List[list]]:
    """Per true scene: association, sizes, registered cameras per threshold, counted cameras, mAA."""
    rows, header = [], None
    for sc in result.datasets[dataset].scenes:
        s = result.scenes[(dataset, sc)]
        ths = result.thresholds[dataset][sc]
        if header is None:
            header = ["scene", "images", "cluster", "shared", "cluster_size"] + \
                     [f"registered@{t:g}" for t in ths] + ["counted", "possible", "mAA"]
        reg = [sum(r.passed[q] for r in result.table if r.dataset == dataset and r.scene == sc)
               for q in range(len(ths))]
        m = sum(1 for r in result.table if r.dataset == dataset and r.scene == sc)
        rows.append([sc, m, s.cluster if s.cluster is not None else "", s.n_shared, s.cluster_size, *reg,
                     s.n_counted, (len(ths) - skip) * max(0, m - to_dec), s.mAA])
    return header or ["scene"], rows


def confusion(labels: Sequence[PoseRecord], submission: Sequence[PoseRecord],
              dataset: str) -> Tuple[List[str], List[str], np.ndarray]:
    """Counts of images per (true scene, predicted cluster) for one dataset.

    Rows: true scenes in label order (plus :data:`NOT_LABELLED` for foreign submitted images); columns:
    clusters in submission order (plus :data:`NO_ROW` for labelled images without a row). Duplicate
    submission rows count once (the first, as the metric).
    """
    truth = {r.image: r.scene for r in labels if r.dataset == dataset}
    scenes = list(dict.fromkeys(r.scene for r in labels if r.dataset == dataset))
    pred: Dict[str, str] = {}
    for r in submission:
        if r.dataset == dataset and r.image not in pred:
            pred[r.image] = r.scene
    clusters = list(dict.fromkeys(pred.values()))
    pairs = Counter((truth.get(im, NOT_LABELLED), c) for im, c in pred.items())
    pairs.update((sc, NO_ROW) for im, sc in truth.items() if im not in pred)
    if any(k[0] == NOT_LABELLED for k in pairs):
        scenes.append(NOT_LABELLED)
    if any(k[1] == NO_ROW for k in pairs):
        clusters.append(NO_ROW)
    M = np.zeros((len(scenes), len(clusters)), int)
    for (s, c), n in pairs.items():
        M[scenes.index(s), clusters.index(c)] = n
    return scenes, clusters, M


def pair_table(views: dict, truth: Dict[str, str]) -> Tuple[List[str], List[list]]:
    """Every shortlisted or verified pair: both images, their true scenes, verified inliers."""
    verified = {tuple(sorted(v[:2])): int(v[2]) for v in views.get("verified", [])}
    pairs = {tuple(sorted(p[:2])) for p in views.get("shortlisted", [])} | set(verified)
    header = ["image_a", "image_b", "scene_a", "scene_b", "same_scene", "shortlisted", "verified", "inliers"]
    short = {tuple(sorted(p[:2])) for p in views.get("shortlisted", [])}
    rows = []
    for a, b in sorted(pairs):
        sa, sb = truth.get(a, ""), truth.get(b, "")
        same = bool(sa and sa == sb and sa != OUTLIER_SCENE)
        rows.append([a, b, sa, sb, same, (a, b) in short, (a, b) in verified, verified.get((a, b), 0)])
    return header, rows


def pair_counts(rows: List[list]) -> Dict[str, int]:
    """Shortlisted / verified pairs, and how many join images of the same true scene."""
    return {
        "shortlisted": sum(bool(r[5]) for r in rows),
        "shortlisted_same_scene": sum(bool(r[5] and r[4]) for r in rows),
        "verified": sum(bool(r[6]) for r in rows),
        "verified_same_scene": sum(bool(r[6] and r[4]) for r in rows),
    }


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence], row_names: Optional[Sequence[str]] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(list(header))
        for i, row in enumerate(rows):
            w.writerow(([row_names[i]] if row_names is not None else []) + [fmt(v) for v in row])
    return path
