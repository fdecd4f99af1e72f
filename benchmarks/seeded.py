"""Pose paths side by side: COLMAP alone, MemPoser alone, MemPoser-seeded COLMAP (issue: seeding).

    python benchmarks/seeded.py --checkpoint checkpoints/memposer_synth.ckpt --out bench/seeded \\
        [--preset benchmark --seed 5000]

Use a ``--seed`` whose scenes the checkpoint never saw in training. Prints score, mAA, clusterness,
registered images, seconds per stage and, for ``seeded``, how many clusters kept the seeded model.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline as bench  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a.startswith("--variants") for a in args):
        args += ["--variants", "colmap,memposer,seeded"]
    sys.exit(bench.main(args))
