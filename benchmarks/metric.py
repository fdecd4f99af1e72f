"""Time the metric's triplet search: fast ``register`` vs the plain reference, side by side.

    python benchmarks/metric.py [--sizes 40 100 300] [--reference-max 40] [--kinds exact noisy outliers]
                                [--baseline GIT_REV]

Scenes: true centres spread over ~10 units, thresholds 0.05..1.0 (IMC2025-like), predictions a
random similarity of the truth; ``noisy`` adds 0.01-unit noise, ``outliers`` 0.05-unit noise, 20 %
wild cameras and 10 % missing poses. The reference (O(n^3) Python loop) runs only up to
``--reference-max`` cameras; where both run, the script checks they agree exactly. ``--baseline``
also times ``register`` of ``memposer/metric`` (a package, or one file before) as of a git revision, right after the current one
on the same input (so both see the same machine load), and checks both give the same models.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from memposer.geometry import random_rotation
from memposer.metric import register
from memposer.metric.reference import register_reference

TH = [0.05, 0.1, 0.2, 0.5, 1.0]
KINDS = {"exact": (0.0, 0.0, 0.0), "noisy": (0.01, 0.0, 0.0), "outliers": (0.05, 0.2, 0.1)}


def scene(n: int, kind: str, rng: np.random.Generator):
    noise, wild, missing = KINDS[kind]
    G = rng.normal(size=(n, 3)) * 10
    R, s, t = random_rotation(rng), rng.uniform(0.2, 5.0), rng.normal(size=3) * 10
    X = ((G + rng.normal(size=G.shape) * noise) - t) @ R / s
    w = rng.random(n) < wild
    X[w] = rng.normal(size=(w.sum(), 3)) * 10 / s
    X[rng.random(n) < missing] = np.nan
    return X, G


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=k in ("A", "t", "err"))
               for k in ("n_inliers", "err", "fit", "triplet", "A", "t"))


def load_baseline(rev: str):
    """``memposer.metric`` as of git revision ``rev``, imported under another name: the package
    (its modules import each other relatively), or the single ``metric.py`` of older revisions."""
    root = Path(__file__).resolve().parents[1]
    tmp = Path(tempfile.mkdtemp())
    single = subprocess.run(["git", "cat-file", "-e", f"{rev}:memposer/metric.py"], cwd=root,
                            stderr=subprocess.DEVNULL).returncode == 0
    if single:
        path, search = tmp / "metric_baseline.py", None
        path.write_bytes(subprocess.run(["git", "show", f"{rev}:memposer/metric.py"], cwd=root, check=True,
                                        capture_output=True).stdout)
    else:
        tar = subprocess.run(["git", "archive", rev, "memposer/metric"], cwd=root, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=tar, check=True)
        (tmp / "memposer" / "metric").rename(tmp / "metric_baseline")
        path, search = tmp / "metric_baseline" / "__init__.py", [str(tmp / "metric_baseline")]
    spec = importlib.util.spec_from_file_location("metric_baseline", path, submodule_search_locations=search)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main(sizes, kinds, reference_max: int, seed: int, baseline: str = None) -> None:
    base = load_baseline(baseline) if baseline else None
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}"
          + (f", baseline {baseline}" if baseline else ""))
    print(f"{'kind':<9} {'n':>5} {'fast s':>9} {'base s':>9} {'ref s':>9} {'inliers@1.0':>12} {'identical':>9}")
    for kind in kinds:
        for n in sizes:
            X, G = scene(n, kind, np.random.default_rng(seed))
            fast, tf = timed(register, X, G, TH)
            tb = tr = float("nan")
            checks = []
            if base is not None:
                old, tb = timed(base.register, X, G, TH)
                checks.append(same(fast, old))
            if n <= reference_max:
                ref, tr = timed(register_reference, X, G, TH)
                checks.append(same(fast, ref))
            ok = "-" if not checks else "yes" if all(checks) else "NO"
            print(f"{kind:<9} {n:>5} {tf:>9.2f} {tb:>9.2f} {tr:>9.2f} {fast.n_inliers[-1]:>12} {ok:>9}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[40, 100, 300])
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--reference-max", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline", help="git revision whose register() is timed alongside (e.g. HEAD~3)")
    a = p.parse_args()
    main(a.sizes, a.kinds, a.reference_max, a.seed, a.baseline)
