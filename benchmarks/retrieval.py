"""Retrieval alone: same-scene precision of each image's k nearest, per descriptor setting.

    python benchmarks/retrieval.py OUT [OUT ...] [--k 10] [--pca configs/retrieval/aliked-synthetic.npz]

Each OUT is a ``benchmarks/pipeline.py`` (or ``real.py``) output folder: its ``data/*_labels.csv`` and the
features cached in ``work-shortlist/``. Outlier images are not queries; datasets with one scene are
skipped (every neighbour is right there).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List

import numpy as np

from memposer.pipeline import retrieval


def settings(pca: str) -> Dict[str, dict]:
    return {
        "vlad": {"method": "vlad"},
        "vlad+pca": {"method": "vlad", "pca": pca},
        "thumb": {"method": "thumb"},
        "thumb+pca": {"method": "thumb", "pca": pca},
        "fused": {"method": "vlad", "fuse": "thumb", "fuse_weight": 0.35},
        "fused+pca": {"method": "vlad", "fuse": "thumb", "fuse_weight": 0.35, "pca": pca},
    }


def precision(desc: np.ndarray, labels: List[str], k: int) -> float:
    """Mean share of each non-outlier image's ``k`` nearest (cosine) that are from its scene."""
    sim = desc @ desc.T
    np.fill_diagonal(sim, -np.inf)
    lab = np.array(labels)
    rows = [np.mean(lab[np.argsort(-sim[i], kind="stable")[:k]] == lab[i]) for i in range(len(lab))
            if lab[i] != "outliers"]
    return float(np.mean(rows))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("outs", nargs="+", type=Path)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--pca", default="retrieval/aliked-synthetic.npz")
    a = p.parse_args()
    conf = settings(a.pca)
    totals: Dict[str, List[float]] = {v: [] for v in conf}
    print("set dataset " + " ".join(conf))
    for out in a.outs:
        labels_csv = next(iter(sorted((out / "data").glob("*_labels.csv"))))
        split = labels_csv.name.split("_")[0]
        rows = list(csv.DictReader(open(labels_csv)))
        for ds in sorted({r["dataset"] for r in rows}):
            scene = {r["image"]: r["scene"] for r in rows if r["dataset"] == ds}
            names = sorted(scene)
            if len(set(scene.values()) - {"outliers"}) < 2:
                continue
            feats = sorted((out / "work-shortlist" / ds).glob("features-*.h5"))
            if not feats:
                print(f"{out} {ds}: no cached features (run the pipeline benchmark first)")
                continue
            cells = []
            for v, c in conf.items():
                d = retrieval.global_descriptors(out / "data" / split / ds, names, feats[0], c, progress=False)
                totals[v].append(precision(d, [scene[n] for n in names], a.k))
                cells.append(f"{totals[v][-1]:.3f}")
            print(f"{out.name} {ds} " + " ".join(cells), flush=True)
    print(f"mean precision@{a.k} over {len(totals['vlad'])} datasets: "
          + ", ".join(f"{v} {np.mean(x):.3f}" for v, x in totals.items() if x))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
