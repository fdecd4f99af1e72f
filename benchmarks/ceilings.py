"""Each pipeline stage's ceiling on this machine: the stage's own computation alone, on inputs
already in memory, with the stage's settings (device, threads, batch size).

    python benchmarks/ceilings.py --work bench/pipeline/work-shortlist/DATASET \\
        --images bench/pipeline/data/test/DATASET [--config default] [--json OUT.json]

``benchmarks/pipeline.py --ceilings`` runs this after its variants, on the same run's caches, and
prints every stage's time beside its ceiling (issue 15: "each stage near its ceiling"):

- features: the extractor's forward pass on images decoded and resized beforehand (tensors on the
  device), on the stage's threads (``features.workers``); images/s.
- retrieval (VLAD): codebook and descriptors from local descriptors already in memory; images/s.
  DINOv2 retrieval has no ceiling here (it runs inside the features stage's decoding).
- matching: LightGlue on pairs' features stacked on the device beforehand, the stage's batch size;
  pairs/s.
- verification: RANSAC (``Database.estimate_pair``) on matches in memory, one thread per core; pairs/s.
- reconstruction is not measured here: its ceiling comes from the run's own per-cluster timeline
  (:func:`reconstruction_ceiling`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch

from memposer import colmap
from memposer.pipeline import features as F
from memposer.pipeline import images as I
from memposer.pipeline import matching as M
from memposer.pipeline import retrieval as R
from memposer.pipeline.cli import load_infer_config
from memposer.pipeline.predict import features_file


def _spread(items: Sequence, n: int) -> list:
    """``n`` of ``items`` evenly spaced (all when fewer): a sample of the whole stage, not its start."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def feature_rate(image_dir: Path, names: Sequence[str], conf: dict, n: int = 32) -> float:
    """Images/s of the extractor alone on ``n`` preloaded images (after one warm-up image)."""
    device = F.pick_device(conf["device"])
    imgs = [I.load_image(image_dir / name, {"resize_max": conf["resize_max"], "grayscale": False})
            for name in _spread(names, n + 1)]
    xs = [I.to_tensor(im).to(device) for im in imgs if im is not None]
    model = F.build_extractor(conf, device)
    workers = int(conf["workers"]) or os.cpu_count() or 1
    def forward(x: torch.Tensor) -> None:
        with torch.inference_mode():  # thread-local: each pool thread enters it
            model({"image": x})

    with F.torch_threads(1 if workers > 1 else None):
        forward(xs[0])  # warm-up: kernels, allocator
        _sync(device)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(forward, xs[1:]))
        _sync(device)
    return (len(xs) - 1) / (time.perf_counter() - t0)


def retrieval_rate(feature_path: Path, names: Sequence[str], conf: dict, n: int = 64) -> Optional[float]:
    """Images/s of VLAD (codebook + descriptors) on ``n`` images' descriptors in memory; None for DINOv2."""
    if conf["method"] == "dinov2" and conf["weights"]:
        return None
    with F.FeatureCache(feature_path, capacity=0) as cache:
        descs = [R.l2(cache[name]["descriptors"].astype(np.float32)) for name in _spread(names, n)]
    rng = np.random.default_rng(conf["seed"])
    t0 = time.perf_counter()
    sample = np.concatenate([d[rng.choice(len(d), min(len(d), conf["vlad_sample"]), replace=False)] for d in descs])
    centres = R.kmeans(sample, conf["vlad_words"], conf["kmeans_iters"], conf["seed"])
    for d in descs:
        R.vlad(d, centres)
    return len(descs) / (time.perf_counter() - t0)


def matching_rate(feature_path: Path, pairs: Sequence[Tuple[str, str]], conf: dict, n: int = 128) -> float:
    """Pairs/s of LightGlue alone on ``n`` pairs whose features are stacked on the device beforehand."""
    device = F.pick_device(conf["device"])
    size = M.batch_size(conf, device)
    with F.FeatureCache(feature_path) as cache:
        model = M.build_matcher(conf, device, size, F.extractor_of(cache.f))
        batches = [{"image0": M._stack([cache[a] for a, _ in b], device), "image1": M._stack([cache[b_] for _, b_ in b], device)}
                   for b in M._batches(_spread(pairs, n), cache, size)]
    done = sum(len(b["image0"]["keypoints"]) for b in batches[1:])
    with torch.inference_mode():
        model(batches[0])  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for b in batches[1:]:
            model(b)
        _sync(device)
    return done / (time.perf_counter() - t0)


def verification_rate(feature_path: Path, match_path: Path, pairs: Sequence[Tuple[str, str]], conf: dict,
                      n: int = 256) -> float:
    """Pairs/s of RANSAC alone on ``n`` pairs' matches in memory, one thread per core."""
    pairs = _spread(pairs, n)
    names = sorted({x for p in pairs for x in p})
    opts = colmap.two_view_options(conf)
    with tempfile.TemporaryDirectory() as tmp, F.FeatureCache(feature_path, capacity=len(names) + 1) as feats, \
            h5py.File(match_path, "r") as mf:
        db = colmap.Database(Path(tmp) / "ceiling.db")
        for name in names:
            f = feats[name]
            w, h = (int(v) for v in f["size"])
            db.add_image(name, w, h, f["keypoints"], f["focal"] if f["focal"] > 0 else None, conf["camera_model"])
        kpts = {name: feats[name]["keypoints"] for name in names}
        found = [M.read_matches(mf, a, b) for a, b in pairs]
        workers = int(conf["workers"]) or os.cpu_count() or 1
        with ThreadPoolExecutor(workers) as pool:
            t0 = time.perf_counter()
            list(pool.map(lambda i: db.estimate_pair(*pairs[i], found[i], kpts[pairs[i][0]], kpts[pairs[i][1]], opts),
                          range(len(pairs))))
            dt = time.perf_counter() - t0
        db.close()
    return len(pairs) / dt


def reconstruction_ceiling(timeline: Dict[str, List[dict]], workers: int) -> float:
    """Seconds the reconstruction stage needs at least with the run's own per-cluster mapping times:
    per dataset (datasets run one after another) the longest cluster or the summed mapping time
    spread over the workers, whichever is larger (a perfect schedule, no process overhead)."""
    total = 0.0
    for rows in timeline.values():
        if rows:
            secs = [r["seconds"] for r in rows]
            total += max(max(secs), sum(secs) / max(1, min(workers, len(secs))))
    return total


def measure(work: Path, image_dir: Path, conf: dict, n_images: int = 32, n_pairs: int = 128) -> Dict[str, Optional[float]]:
    """The four measured ceilings on one dataset's caches (``work``: its work folder)."""
    feature_path = features_file(work)
    if feature_path is None:
        raise SystemExit(f"no features cache in {work}: run the pipeline on it first")
    match_path = work / feature_path.name.replace("features-", "matches-")
    views = json.loads((work.parent / "views.json").read_text())[work.name]
    pairs = [tuple(p) for p in views["shortlisted"]]
    names = sorted({x for p in pairs for x in p})
    return {
        "features_images_per_s": feature_rate(image_dir, names, conf["features"], n_images),
        "retrieval_images_per_s": retrieval_rate(feature_path, names, conf["retrieval"], 2 * n_images),
        "matching_pairs_per_s": matching_rate(feature_path, pairs, conf["matching"], n_pairs),
        "verification_pairs_per_s": verification_rate(feature_path, match_path, pairs, conf["verification"], 2 * n_pairs),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="one dataset's work folder (the pipeline's caches)")
    p.add_argument("--images", type=Path, required=True, help="that dataset's image folder")
    p.add_argument("--config", default="default")
    p.add_argument("--images-sample", type=int, default=32)
    p.add_argument("--pairs-sample", type=int, default=128)
    p.add_argument("--json", type=Path)
    a, overrides = p.parse_known_args(argv)
    conf = load_infer_config(a.config, overrides)
    rates = measure(a.work, a.images, conf, a.images_sample, a.pairs_sample)
    for k, v in rates.items():
        print(f"{k:<26} {'-' if v is None else f'{v:.1f}'}")
    if a.json:
        a.json.write_text(json.dumps(rates, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
