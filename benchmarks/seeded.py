"""Pose paths side by side: COLMAP alone, MemPoser alone, MemPoser-seeded COLMAP, and the seeded
path with uninformative seeds (identity, random) and near-perfect ones (true poses perturbed by 5 deg
and 5% of the camera spread), so that what the model's seeds are worth shows.

    python benchmarks/seeded.py --checkpoint checkpoints/memposer-tracks.safetensors --out bench/seeded \\
        [--preset benchmark_cpu --config cpu --num-threads 1]

Prints score, mAA, clusterness, registered images, seconds per stage and, per dataset, how many
clusters kept the seeded model (``paths`` in results.json).
"""
from __future__ import annotations

import sys

import pipeline as bench  # benchmarks/pipeline.py: a script's own folder is first on sys.path

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a.startswith("--variants") for a in args):
        args += ["--variants", "colmap,memposer,seeded,seeded-identity,seeded-random,seeded-perturbed"]
    sys.exit(bench.main(args))
