"""Draw the reconstruction stage's per-cluster timeline of a ``benchmarks/pipeline.py`` run.

    python benchmarks/plot_timeline.py bench/pipeline/results.json --out docs/images/timeline.png [--variant best]

One panel per dataset (datasets are mapped one after another): a row per worker process, a bar per
cluster from its start to its end, labelled with its image count; the dashed line is the stage's
ceiling for that dataset (``benchmarks/ceilings.py: reconstruction_ceiling``), so idle workers and
a long last cluster show at a glance.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ceilings import reconstruction_ceiling  # benchmarks/ceilings.py


def draw(row: dict, out: Path) -> None:
    """One variant's timeline (a results.json row) as a PNG."""
    datasets = [d for d, rows in row["timeline"].items() if rows]
    if not datasets:
        raise SystemExit(f"variant {row['variant']} has no timeline (a run before timelines were recorded?)")
    workers = row.get("reconstruction_workers", 1)
    fig = Figure(figsize=(9, 1.2 + 0.9 * sum(1 + max(r["worker"] for r in row["timeline"][d]) for d in datasets)))
    FigureCanvasAgg(fig)
    heights = [1 + max(r["worker"] for r in row["timeline"][d]) for d in datasets]
    axes = fig.subplots(len(datasets), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, d in zip(axes, datasets):
        rows = row["timeline"][d]
        for r in rows:
            ax.barh(r["worker"], r["end"] - r["start"], left=r["start"], height=0.7, color="tab:blue", alpha=0.6,
                    edgecolor="k", linewidth=0.5)
            ax.text(r["start"] + (r["end"] - r["start"]) / 2, r["worker"], str(r["images"]), ha="center",
                    va="center", fontsize=7)
        ceil = reconstruction_ceiling({d: rows}, workers)
        ax.axvline(ceil, color="tab:red", linestyle="--", linewidth=1)
        end = max(r["end"] for r in rows)
        ax.set_title(f"{d}: {len(rows)} clusters, {end:.1f} s (ceiling {ceil:.1f} s, dashed)", fontsize=9)
        ax.set_yticks(range(heights[datasets.index(d)]))
        ax.set_ylabel("worker", fontsize=8)
        ax.invert_yaxis()
    axes[-1].set_xlabel("seconds since the dataset's first cluster started (bar label: images)")
    fig.suptitle(f"reconstruction timeline, variant {row['variant']} ({workers} workers)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, help="results.json of benchmarks/pipeline.py")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variant", help="which variant's timeline (default: the first)")
    a = p.parse_args(argv)
    rows = json.loads(a.results.read_text())
    row = next((r for r in rows if a.variant in (None, r["variant"])), None)
    if row is None:
        raise SystemExit(f"no variant {a.variant!r} in {a.results}: {[r['variant'] for r in rows]}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    draw(row, a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
