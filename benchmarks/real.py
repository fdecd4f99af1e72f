"""The pipeline benchmark on a labelled real split (``../shared/data/imc_real``), any variants side by side.

    python benchmarks/real.py --data ../shared/data/imc_real --datasets liberty --out bench/liberty \\
        --config cpu --num-threads 1 --checkpoint checkpoints/memposer-tracks.safetensors \\
        --variants colmap,seeded,seeded-identity,seeded-random,seeded-perturbed

Links the chosen datasets of ``DATA/train`` (images are not copied) with their rows of
``train_labels.csv`` and ``train_thresholds.csv`` into ``OUT/data``, then runs
``benchmarks/pipeline.py`` on it: every variant of that script (pair selection, clustering, pose
paths and the seeds the model is compared with), each in its own process, one table.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import List, Optional

import pipeline as bench  # benchmarks/pipeline.py: a script's own folder is first on sys.path


def _filter_csv(src: Path, dst: Path, datasets: List[str]) -> int:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r["dataset"] in datasets]
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return len(keep)


def prepare(data: Path, out: Path, datasets: List[str]) -> int:
    """Lay out ``out/train/<dataset>`` (links) and the two CSVs; returns the number of labelled images."""
    missing = [d for d in datasets if not (data / "train" / d).is_dir()]
    if missing:
        raise SystemExit(f"real.py: no dataset {missing} under {data / 'train'}")
    (out / "train").mkdir(parents=True, exist_ok=True)
    for d in datasets:
        link = out / "train" / d
        if not link.exists():
            link.symlink_to((data / "train" / d).resolve(), target_is_directory=True)
    _filter_csv(data / "train_thresholds.csv", out / "train_thresholds.csv", datasets)
    return _filter_csv(data / "train_labels.csv", out / "train_labels.csv", datasets)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/imc_real"),
                   help="folder with train/, train_labels.csv, train_thresholds.csv")
    p.add_argument("--datasets", required=True, help="comma-separated datasets of DATA/train")
    p.add_argument("--out", type=Path, required=True)
    a, rest = p.parse_known_args(argv)
    return bench.main_on_split(
        a.out, lambda d: f"real: {prepare(a.data, d, a.datasets.split(','))} labelled images in {d}", rest)


if __name__ == "__main__":
    sys.exit(main())
