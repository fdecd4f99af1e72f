"""Plot ``benchmarks/model_eval.py --json`` results of several checkpoints on several held-out sets.

    python benchmarks/plot_model_eval.py --out docs/images/stage4.png \\
        classic:v3=ev/classic-v3.json classic:s4d=ev/classic-s4d.json \\
        noexif:v3=ev/noexif-v3.json noexif:s4d=ev/noexif-s4d.json

Each argument is ``SET:MODEL=FILE``. One group of bars per set, one bar per model: the median over
the file's tables (runs, frame sets) of MemPoser's relative-rotation median, with a line from the
smallest to the largest table. Tables of exact reprojections (``--reference``) are left out.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def rotation_medians(path: Path, method: str = "memposer") -> List[float]:
    """MemPoser's rotation median of every table in one model_eval JSON (observed tracks only)."""
    tables = json.loads(Path(path).read_text())
    return [t[method]["rot_median"] for name, t in tables.items() if "reprojected" not in name and method in t]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="SET:MODEL=FILE")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    p.add_argument("--title", default="MemPoser before BA: relative rotation median (deg), held-out sets")
    a = p.parse_args(argv)
    data: Dict[str, Dict[str, List[float]]] = {}
    for arg in a.runs:
        try:
            key, path = arg.split("=", 1)
            group, model = key.split(":", 1)
        except ValueError:
            p.error(f"expected SET:MODEL=FILE, got {arg!r}")
        data.setdefault(group, {})[model] = rotation_medians(Path(path))
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    models = list(dict.fromkeys(m for g in data.values() for m in g))
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(data), 3.6))
    for k, m in enumerate(models):
        xs, mid, lo, hi = [], [], [], []
        for i, g in enumerate(data):
            if m in data[g] and data[g][m]:
                v = np.asarray(data[g][m])
                xs.append(i + (k - (len(models) - 1) / 2) * width)
                mid.append(np.median(v))
                lo.append(np.median(v) - v.min())
                hi.append(v.max() - np.median(v))
        ax.bar(xs, mid, width, yerr=[lo, hi], capsize=3, label=m)
    ax.set_xticks(range(len(data)), list(data))
    ax.set_ylabel("rotation median (deg)")
    ax.set_title(a.title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
