"""The whole submission pipeline over a competition folder, one dataset at a time.

images -> features -> global descriptors -> pair shortlist -> LightGlue -> verification ->
clustering -> poses per cluster (colmap | memposer | seeded) -> submission.csv

Caches live under ``work/<dataset>/`` (HDF5 features and matches), so a killed run resumes. A
dataset that fails is logged and written as ``nan`` outliers; the submission always holds every image.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from memposer import colmap
from memposer.data.imc import (OUTLIER_SCENE, PoseRecord, complete_submission, nan_records, scan_dataset_folder,
                               write_submission)
from memposer.pipeline import (clustering, export, features, matching, pairs, prematch, reconstruction,
                               retrieval, verification)
from memposer.pipeline.reconstruction import Predictor
from memposer.config import check_keys, deep_merge
from memposer.pipeline.workdir import check_free_space, work_lock

log = logging.getLogger(__name__)

default_conf: Dict[str, Any] = {
    "seed": 0,
    "device": "auto",
    "features": features.default_conf,
    "retrieval": retrieval.default_conf,
    "pairs": pairs.default_conf,
    "matching": matching.default_conf,
    "verification": verification.default_conf,
    "clustering": clustering.default_conf,
    "reconstruction": reconstruction.default_conf,
}
REPORT_POINTS = 1500  # per cluster in views.json: enough to see the structure, small enough to inline
STAGES = ("features", "retrieval", "pairs", "matching", "verification", "clustering", "reconstruction")


@dataclass
class RunResult:
    records: List[PoseRecord]
    timings: Dict[str, float]  # seconds per stage, summed over datasets
    views: Dict[str, dict] = field(default_factory=dict)  # per dataset: pairs, clusters (for reports)
    paths: Dict[str, Dict[str, str]] = field(default_factory=dict)  # dataset -> cluster -> pose path
    failed: List[str] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)  # failed dataset -> why


def _cache_tag(conf: dict) -> str:
    f = conf["features"]
    up = "-upright" if f["upright"]["enabled"] else ""  # features of turned images differ
    return f"{f['extractor']}-{f.get('model_name', '')}-{f['max_num_keypoints']}-{f['resize_max']}{up}"


class _Clock:
    """Seconds per stage; says (with -v) when each stage starts and how long it took."""

    def __init__(self, timings: Dict[str, float], dataset: str):
        self.timings, self.dataset, self.t = timings, dataset, time.perf_counter()
        log.info("%s: starting %s", dataset, STAGES[0])

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] += now - self.t
        nxt = STAGES.index(stage) + 1
        log.info("%s: %s took %.1f s%s", self.dataset, stage, now - self.t,
                 f"; starting {STAGES[nxt]}" if nxt < len(STAGES) else "")
        self.t = now

    def move(self, seconds: float, src: str, dst: str) -> None:
        """Count ``seconds`` spent inside stage ``src`` as ``dst``'s."""
        self.timings[src] -= seconds
        self.timings[dst] += seconds


def run_dataset(dataset: str, image_dir: Path, names: List[str], work: Path, conf: dict,
                predictor: Optional[Predictor], timings: Dict[str, float], progress: bool = True):
    """Records for one dataset plus its views and per-cluster pose paths."""
    clock = _Clock(timings, dataset)
    tag = _cache_tag(conf)
    feat_path, match_path = work / f"features-{tag}.h5", work / f"matches-{tag}.h5"
    # DINOv2 retrieval describes each image as the features stage decodes it: one decode per image
    describer = retrieval.pixel_descriptors(conf["retrieval"], progress)
    status = features.extract_features(image_dir, names, feat_path, conf["features"], progress,
                                       describer.add if describer else None)
    ok = [n for n in names if status.get(n)]
    clock.lap("features")
    if describer:  # descriptors made while the features stage decoded are retrieval's time
        clock.move(describer.seconds, "features", "retrieval")
    desc = retrieval.global_descriptors(image_dir, ok, feat_path, conf["retrieval"], progress, describer)
    union = retrieval.union_descriptors(image_dir, ok, feat_path, conf["retrieval"], progress, describer)
    clock.lap("retrieval")
    score = prematch.pair_scorer(ok, feat_path, conf["pairs"], conf["matching"]["device"])  # for pairs.rerank
    shortlist = [(ok[i], ok[j]) for i, j in pairs.shortlist_pairs(desc, conf["pairs"], score, union)]
    clock.lap("pairs")
    matching.match_pairs(shortlist, feat_path, match_path, conf["matching"], progress)
    clock.lap("matching")
    db_path = work / "database.db"
    verified = verification.verify_pairs(ok, shortlist, feat_path, match_path, db_path, conf["verification"], progress)
    clock.lap("verification")
    clusters, _ = clustering.cluster_images(ok, verified, conf["clustering"])
    clock.lap("clustering")
    log.info("%s: %d clusters of %s images, %d images in none", dataset, len(clusters),
             sorted((len(c) for c in clusters), reverse=True), len(ok) - sum(len(c) for c in clusters))
    results = reconstruction.reconstruct_clusters(clusters, db_path, image_dir, work / "models",
                                                  conf["reconstruction"], predictor, progress,
                                                  label=dataset)
    models, paths, model_dirs = [], {}, {}
    for res in results:
        for k, m in enumerate(res.models if res is not None else []):
            paths[f"cluster{len(models)}"] = res.path
            model_dirs[f"cluster{len(models)}"] = res.model_dirs[k] if k < len(res.model_dirs) else None
            models.append(m)
    clock.lap("reconstruction")
    records = [PoseRecord(dataset, f"cluster{k}", n, *m[n]) for k, m in enumerate(models) for n in sorted(m)]
    placed = {r.image for r in records}
    records += nan_records(dataset, [n for n in names if n not in placed])
    views = {"image_dir": str(image_dir), "shortlisted": [list(p) for p in shortlist],
             "verified": [list(v) for v in verification.verified_graph(verified)],
             "clusters": {f"cluster{k}": sorted(m) for k, m in enumerate(models)},
             "outliers": sorted(n for n in names if n not in placed),
             "unreadable": [n for n in names if not status.get(n)],
             # sparse points per cluster in the cluster's frame, for the report's 3D view
             "points": {c: export.sample_points(d, REPORT_POINTS) for c, d in model_dirs.items()},
             "model_dirs": model_dirs,
             # per cluster: when and on which worker it was mapped (benchmarks/pipeline.py draws it)
             "timeline": reconstruction.timeline(clusters, results)}
    return records, views, paths


def run_pipeline(data_dir: Path | str, out_csv: Path | str, conf: Optional[dict] = None,
                 work_dir: Optional[Path | str] = None, predictor: Optional[Predictor] = None,
                 datasets: Optional[Sequence[str]] = None, progress: bool = True,
                 export_dir: Optional[Path | str] = None) -> RunResult:
    """Run every dataset of ``data_dir`` (a ``test/`` or ``train/`` folder) and write ``out_csv``.

    With ``export_dir``, every cluster is also written as a COLMAP model with the cluster -> images
    map and the matched pairs (``memposer.pipeline.export``):
    ``export_dir/<dataset>/<cluster>/{cameras,images,points3D}.bin``, ``clusters.csv``, ``pairs.txt``.
    """
    check_keys(conf or {}, default_conf)
    conf = deep_merge(default_conf, conf or {})
    data_dir, out_csv = Path(data_dir), Path(out_csv)
    work_dir = Path(work_dir) if work_dir else out_csv.parent / "memposer_work"
    with work_lock(work_dir):
        return _run_locked(data_dir, out_csv, conf, work_dir, predictor, datasets, progress, export_dir)


def _run_locked(data_dir: Path, out_csv: Path, conf: dict, work_dir: Path, predictor: Optional[Predictor],
                datasets: Optional[Sequence[str]], progress: bool,
                export_dir: Optional[Path | str] = None) -> RunResult:
    seed_everything(conf["seed"])
    if export_dir is not None:
        export_dir = Path(export_dir)
        try:  # an unusable folder fails here, before any work
            export_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"export folder {export_dir}: cannot create it ({e})") from None
        conf["reconstruction"]["write_models"] = True
    expected = scan_dataset_folder(data_dir)
    if datasets:
        unknown = set(datasets) - set(expected)
        if unknown:
            raise FileNotFoundError(f"dataset(s) {sorted(unknown)} not in {data_dir} (have {sorted(expected)})")
        expected = {d: expected[d] for d in datasets}
    if not expected:
        log.warning("no dataset folders in %s: writing an empty submission", data_dir)
    timings: Dict[str, float] = defaultdict(float)
    result = RunResult([], timings)
    done: Dict[str, List[str]] = {}
    # Complete from the start (every image nan): even a crash that Python cannot catch leaves every row.
    write_submission(complete_submission([], expected), out_csv)
    for ds, names in tqdm(expected.items(), desc="datasets", disable=not progress):
        if not names:
            continue
        try:
            check_free_space(work_dir / ds, len(names), int(conf["features"]["max_num_keypoints"]))
            recs, views, paths = run_dataset(ds, data_dir / ds, names, work_dir / ds, conf, predictor, timings, progress)
            result.views[ds], result.paths[ds] = views, paths
        except Exception as e:  # one bad dataset must not cost the others their rows
            log.error("dataset %s failed (%s: %s); its images are written as nan outliers", ds, type(e).__name__, e)
            log.debug("%s", traceback.format_exc())
            recs = nan_records(ds, names)
            result.failed.append(ds)
            result.errors[ds] = f"{type(e).__name__}: {e}"
        result.records += recs
        done[ds] = names
        if export_dir is not None:
            view = result.views.get(ds, {})
            try:
                export.export_dataset(export_dir, ds, names, view.get("clusters", {}), view.get("model_dirs", {}),
                                      view.get("shortlisted", []))
            except OSError as e:  # the submission matters more than the export: keep going
                log.error("export of dataset %s to %s failed (%s)", ds, export_dir, e)
        # Written after every dataset so that a crash later still leaves the finished ones.
        write_submission(complete_submission(result.records, done), out_csv)
    result.records = complete_submission(result.records, expected)
    write_submission(result.records, out_csv)
    try:  # for reports only: a full disk here must not fail a run whose submission is written
        (work_dir / "views.json").write_text(json.dumps(result.views, indent=1))
    except OSError as e:
        log.warning("could not write %s (%s); reports will lack the match graph", work_dir / "views.json", e)
    return result


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
    colmap.set_seed(seed)


def format_timings(timings: Dict[str, float], n_images: int) -> str:
    total = sum(timings.values())
    lines = [f"{'stage':<16}{'seconds':>10}{'share':>8}"]
    lines += [f"{s:<16}{timings.get(s, 0.0):10.1f}{100 * timings.get(s, 0.0) / max(total, 1e-9):7.1f}%" for s in STAGES]
    lines.append(f"{'total':<16}{total:10.1f}   ({n_images / max(total, 1e-9):.2f} images/s)")
    return "\n".join(lines)


def summary_counts(records: List[PoseRecord]) -> Dict[str, int]:
    registered = sum(1 for r in records if r.scene != OUTLIER_SCENE and r.R is not None)
    return {"images": len(records), "registered": registered}
