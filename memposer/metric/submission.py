"""Submission rows as the score reads them: one row per labelled image, camera centres from poses."""
from __future__ import annotations

import logging
from typing import List

import numpy as np

from memposer.data.imc import PoseRecord
from memposer.geometry import camera_center

log = logging.getLogger(__name__)


def camera_centers(records: List[PoseRecord]) -> np.ndarray:
    c = np.full((len(records), 3), np.nan)
    for i, r in enumerate(records):
        if r.R is not None and r.t is not None:
            with np.errstate(all="ignore"):
                c[i] = camera_center(np.asarray(r.R, np.float64).reshape(3, 3), np.asarray(r.t, np.float64))
    return c


def clean_submission(dataset: str, gt_images: set, rows: List[PoseRecord]) -> List[PoseRecord]:
    out, seen, foreign = [], set(), 0
    for r in rows:
        if r.image not in gt_images:
            foreign += 1
        elif r.image in seen:
            log.warning("%s: duplicate row for image %s dropped (first row kept)", dataset, r.image)
        else:
            seen.add(r.image)
            out.append(r)
    if foreign:
        log.warning("%s: %d submission rows name images not in the labels; ignored", dataset, foreign)
    missing = len(gt_images) - len(seen)
    if missing:
        log.warning("%s: %d labelled images have no submission row; counted as outliers", dataset, missing)
    return out
