"""LightGlue throughput per batching mode, side by side on the same pairs.

    python benchmarks/matching.py --images DIR [--pairs 600] [--batch 1 8 16 32] [--out bench/matching]

Extracts ALIKED features of every image in ``DIR`` once, then matches the same pairs (all pairs of
the first images, up to ``--pairs``) with: batch 1 and LightGlue's adaptive depth/width (its
default), batch 1 at full depth/width, and each ``--batch`` > 1 (batches always run at full
depth/width, see memposer/pipeline/matching.py). Prints pairs/s, mean matches per pair, agreement
with the full-depth batch-1 matches, and peak GPU memory.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from itertools import combinations
from pathlib import Path
from typing import List, Optional

import h5py
import torch

from memposer.data.imc import IMAGE_EXTENSIONS
from memposer.pipeline.features import extract_features
from memposer.pipeline.matching import match_pairs, read_matches


def _read_all(path: Path, pairs) -> dict:
    with h5py.File(path, "r") as f:
        return {p: {tuple(r) for r in read_matches(f, *p)} for p in pairs}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("bench/matching"))
    p.add_argument("--pairs", type=int, default=600)
    p.add_argument("--batch", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--max-keypoints", type=int, default=2048)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    names = sorted(x.name for x in a.images.iterdir() if x.suffix.lower() in IMAGE_EXTENSIONS)
    pairs = list(combinations(names, 2))[:a.pairs]
    a.out.mkdir(parents=True, exist_ok=True)
    feats = a.out / "features.h5"
    t0 = time.perf_counter()
    extract_features(a.images, names, feats, {"max_num_keypoints": a.max_keypoints, "device": a.device})
    print(f"features: {len(names)} images in {time.perf_counter() - t0:.1f} s")
    modes = [("b1-adaptive", {"batch_size": 1}),
             ("b1-full", {"batch_size": 1, "depth_confidence": -1, "width_confidence": -1}),
             *[(f"b{b}-full", {"batch_size": b}) for b in a.batch]]
    # Warm-up (CUDA context, cuDNN/SDPA kernel choice) on a few pairs, not timed.
    match_pairs(pairs[:32], feats, a.out / "warmup.h5", {"batch_size": 16, "device": a.device}, progress=False)
    rows, ref = [], None
    for name, conf in modes:
        path = a.out / f"matches-{name}.h5"
        path.unlink(missing_ok=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        match_pairs(pairs, feats, path, {**conf, "device": a.device}, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        m = _read_all(path, pairs)
        if name == "b1-full":
            ref = m
        rows.append(dict(mode=name, seconds=dt, pairs_per_s=len(pairs) / dt,
                         mean_matches=sum(len(v) for v in m.values()) / len(pairs), matches=m,
                         peak_gpu_gib=torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else 0.0))
    print(f"{len(pairs)} pairs, {a.max_keypoints} keypoints, device {a.device}")
    print(f"{'mode':<14}{'pairs/s':>10}{'matches':>10}{'same as b1-full':>18}{'GPU GiB':>10}")
    for r in rows:
        m = r.pop("matches")
        inter = sum(len(m[q] & ref[q]) for q in pairs)
        union = sum(len(m[q] | ref[q]) for q in pairs)
        r["jaccard_vs_b1_full"] = inter / max(union, 1)
        print(f"{r['mode']:<14}{r['pairs_per_s']:>10.1f}{r['mean_matches']:>10.1f}{r['jaccard_vs_b1_full']:>18.3f}"
              f"{r['peak_gpu_gib']:>10.2f}")
    (a.out / "results.json").write_text(json.dumps(rows, indent=1))
    (a.out / "warmup.h5").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
