"""Pipeline benchmark: shortlisted vs exhaustive pairs, side by side, on a synthetic competition.

    python benchmarks/pipeline.py --out bench/pipeline [--preset benchmark] [--config default]

Generates the data once (deterministic by ``--seed``), runs each variant in its own process (so
peak memory is per variant) with the same settings but the pair selection, and prints score, mAA,
clusterness, pairs matched, verified pairs, seconds per stage and peak memory. Variants other than
``exhaustive`` and ``baseline`` share one cache: the first of them computes features and matches, the
others reuse them (their feature/matching seconds are then near zero). With ``baseline`` among the
variants (the public baseline's exhaustive pairs + one mapper per dataset), every other variant's
wall time is also printed as a ratio to it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

# Rendering workers are processes: one BLAS/OpenMP thread each, or 16 workers x 16 threads thrash.
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

PCA_FILE = "retrieval/aliked-synthetic.npz"  # under configs/
VARIANTS = {
    "shortlist": [],
    "exhaustive": ["pairs.exhaustive_below=1000000"],
    # the public baseline's recipe (issue 15's yardstick): every pair, no clustering (one mapper per
    # dataset splits the scenes), plain incremental mapping; own caches, so it pays for its matching
    "baseline": ["pairs.exhaustive_below=1000000", "clustering.method=none", "reconstruction.poses=colmap",
                 "reconstruction.mapper=incremental"],
    # clustering choices (the defaults are picked from these numbers)
    "min_inliers30": ["clustering.min_inliers=30"],
    "louvain": ["clustering.method=louvain"],
    "nosupport": ["clustering.support=0"],  # edges need no common neighbour (the default before)
    "support2": ["clustering.support=2"],
    # pair selection (issue 15): retrieval's k alone, or candidates re-ranked by mutual descriptor matches
    "k5": ["pairs.k=5", "pairs.rerank=none"],
    "k10": ["pairs.k=10", "pairs.rerank=none"],
    "rerank3": ["pairs.k=3", "pairs.rerank=mutual"],
    "rerank4": ["pairs.k=4", "pairs.rerank=mutual"],
    "rerank5": ["pairs.k=5", "pairs.rerank=mutual"],
    "rerank6": ["pairs.k=6", "pairs.rerank=mutual"],
    "rerank5-min15": ["pairs.k=5", "pairs.rerank=mutual", "pairs.rerank_min=15"],
    "rerank6-min15": ["pairs.k=6", "pairs.rerank=mutual", "pairs.rerank_min=15"],
    "rerank6-min15-skip": ["pairs.k=6", "pairs.rerank=mutual", "pairs.rerank_min=15", "reconstruction.best_skip_complete=true"],
    # retrieval (issue 14, the seed notes' ideas 1-3): a second global descriptor fused in, whitening fitted
    # on a train split (configs/retrieval/aliked-synthetic.npz), the descriptor graph's spanning tree added
    "thumb": ["retrieval.fuse=thumb", "retrieval.fuse_weight=0.35"],
    "pca": [f"retrieval.pca={PCA_FILE}"],
    "thumb-pca": ["retrieval.fuse=thumb", "retrieval.fuse_weight=0.35", f"retrieval.pca={PCA_FILE}"],
    "mst": ["pairs.mst=true"],
    "union-thumb": ["retrieval.union=thumb", "pairs.union_k=3"],  # thumb's 3 nearest added to VLAD's pairs
    "reattach": ["clustering.reattach=30"],  # left-out images join their clear best cluster
    "global": ["reconstruction.mapper=global"],  # GLOMAP-style global SfM (refined as a seed) instead of incremental
    "global-raw": ["reconstruction.mapper=global", "reconstruction.global_refine=false"],  # without the refinement
    "best": ["reconstruction.mapper=best"],  # the default: both mappers, the better model kept
    "best-skip": ["reconstruction.mapper=best", "reconstruction.best_skip_complete=true"],  # incremental only where global leaves images out
    "incremental": ["reconstruction.mapper=incremental"],
    # the last step of each mapper model (pipeline/intrinsics.py): off, or the robust adjustment alone
    "intrinsics-off": ["reconstruction.intrinsics.final_ba=false", "reconstruction.intrinsics.share=false"],
    "final-ba": ["reconstruction.intrinsics.share=false"],  # the default before session 2026-12-07 #6
    "share-partial": ["reconstruction.intrinsics.share_partial=true"],  # images share where their own fit allows
    # clusters one after another (COLMAP gets every core) or one process per core
    "serial": ["reconstruction.workers=1"],
    "parallel": ["reconstruction.workers=0"],
    # pose paths (benchmarks/seeded.py); memposer and seeded need --checkpoint
    "colmap": ["reconstruction.poses=colmap"],
    "memposer": ["reconstruction.poses=memposer"],
    "seeded": ["reconstruction.poses=seeded"],
    "seeded-fill": ["reconstruction.poses=seeded", "reconstruction.fill_unregistered=true"],
    # models joined on duplicate (symmetric) structure split, with and without remapping (pipeline/split.py)
    "split": ["reconstruction.split.enabled=true", "reconstruction.mapper=incremental"],
    "split-noremap": ["reconstruction.split.enabled=true", "reconstruction.split.remap=false", "reconstruction.mapper=incremental"],
    # sequence continuity (videos): consecutive frames are paired too (pipeline/pairs.py)
    "sequence": ["pairs.sequence_window=2"],
    "seeded-sequence": ["reconstruction.poses=seeded", "pairs.sequence_window=2"],
    # uninformative and near-perfect seeds for the seeded path (what the model's seeds are worth)
    "seeded-identity": ["reconstruction.poses=seeded"],
    "seeded-random": ["reconstruction.poses=seeded"],
    "seeded-perturbed": ["reconstruction.poses=seeded"],
}


def run_variant(a: argparse.Namespace, name: str) -> dict:
    """One pipeline run in this process; returns its numbers."""
    import torch

    from memposer.data.imc import read_labels, read_thresholds
    from memposer.metric import score_submission
    from memposer.pipeline.cli import load_infer_config
    from memposer.pipeline.run import run_pipeline, summary_counts

    conf = load_infer_config(a.config, [*VARIANTS[name], *a.overrides])
    conf["reconstruction"]["num_threads"] = a.num_threads
    predictor = None
    if name in ("seeded-identity", "seeded-random", "seeded-perturbed"):
        from memposer.pipeline.predict import baseline_predictor
        ref = {r.image: (r.R, r.t) for r in read_labels(a.out / "data" / f"{a.split}_labels.csv") if r.R is not None}
        predictor = baseline_predictor(name.split("-", 1)[1], a.seed, ref)
    elif conf["reconstruction"]["poses"] != "colmap":
        from memposer.pipeline.predict import load_predictor
        predictor = load_predictor(a.checkpoint, conf["device"], rolls=conf["reconstruction"]["predict_rolls"],
                                   turns=conf["reconstruction"]["predict_turns"])
    out = a.out / name
    # Variants with the same pairs share feature/match caches: only the first pays for matching.
    work = _work_dir(a.out, name)
    t0 = time.perf_counter()
    res = run_pipeline(a.out / "data" / a.split, out / "submission.csv", conf, work, predictor, progress=False)
    wall = time.perf_counter() - t0
    result = score_submission(read_labels(a.out / "data" / f"{a.split}_labels.csv"), res.records,
                              read_thresholds(a.out / "data" / f"{a.split}_thresholds.csv"))
    ds = result.datasets.values()
    return {
        "variant": name, "score": result.score, "mAA": sum(d.mAA for d in ds) / len(ds),
        "clusterness": sum(d.clusterness for d in ds) / len(ds),
        "pairs": sum(len(v["shortlisted"]) for v in res.views.values()),
        "verified": sum(len(v["verified"]) for v in res.views.values()),
        "failed": res.failed,
        "paths": {ds: sorted(p.values()).count("seeded") for ds, p in res.paths.items()},
        **summary_counts(res.records), "wall_s": wall, "timings": dict(res.timings),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if torch.cuda.is_available() else 0.0,
        "per_dataset": {k: {"score": d.score, "mAA": d.mAA, "clusterness": d.clusterness}
                        for k, d in result.datasets.items()},
        # per dataset, when and on which worker each cluster was mapped (reconstruction.timeline)
        "timeline": {k: v.get("timeline", []) for k, v in res.views.items()},
        "reconstruction_workers": int(conf["reconstruction"]["workers"]) or os.cpu_count() or 1,
    }


def table(rows: List[dict]) -> str:
    keys = [("score", "{:.3f}"), ("mAA", "{:.3f}"), ("clusterness", "{:.3f}"), ("pairs", "{:d}"),
            ("verified", "{:d}"), ("registered", "{:d}"), ("images", "{:d}"), ("wall_s", "{:.1f}"),
            ("peak_rss_gib", "{:.2f}"), ("peak_gpu_gib", "{:.2f}")]
    stages = sorted({s for r in rows for s in r["timings"]}, key=lambda s: list(rows[0]["timings"]).index(s)
                    if s in rows[0]["timings"] else 99)
    rates = [("images/s end to end", lambda r: r["images"] / r["wall_s"]),
             ("images/s features", lambda r: r["images"] / max(r["timings"].get("features", 0.0), 1e-9)),
             ("pairs/s matching", lambda r: r["pairs"] / max(r["timings"].get("matching", 0.0), 1e-9))]
    w = max(len(k) for k, _ in rates)
    lines = [f"{'':<{w}}" + "".join(f"{r['variant']:>14}" for r in rows)]
    lines += [f"{k:<{w}}" + "".join(f"{fmt.format(r[k]):>14}" for r in rows) for k, fmt in keys]
    lines += [f"{'t_' + s:<{w}}" + "".join(f"{r['timings'].get(s, 0.0):>14.1f}" for r in rows) for s in stages]
    lines += [f"{k:<{w}}" + "".join(f"{f(r):>14.1f}" for r in rows) for k, f in rates]
    if len(rows) == 2 and rows[0]["pairs"]:
        lines.append(f"pair ratio {rows[1]['variant']}/{rows[0]['variant']}: {rows[1]['pairs'] / rows[0]['pairs']:.2f}x")
    base = [r for r in rows if r["variant"] == "baseline"]
    lines += [f"time ratio {r['variant']}/baseline: {r['wall_s'] / base[0]['wall_s']:.2f}x (score "
              f"{r['score']:.3f} vs {base[0]['score']:.3f})" for r in rows if base and r is not base[0]]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench/pipeline"))
    p.add_argument("--preset", default="benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes rendering the data")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--config", default="default")
    p.add_argument("--variants", default="shortlist,exhaustive")
    p.add_argument("--num-threads", type=int, default=-1)
    p.add_argument("--checkpoint", help="MemPoser checkpoint for the memposer / seeded variants")
    p.add_argument("--dinov2", help="DINOv2 weights (retrieval and the checkpoint's backbone)")
    p.add_argument("--ceilings", action="store_true",
                   help="after the variants, each stage's ceiling on this machine (benchmarks/ceilings.py)")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    a, a.overrides = p.parse_known_args(argv)
    if a.variant:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("memposer.pipeline.run").setLevel(logging.DEBUG)  # stage laps, for long runs
        print("RESULT " + json.dumps(run_variant(a, a.variant)))
        return 0
    data = a.out / "data"
    if not (data / f"{a.split}_labels.csv").is_file():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "memposer.data.synthetic", "--out", str(data), "--preset", a.preset,
                        "--seed", str(a.seed), "--split", a.split, "--workers", str(a.workers), "--quiet"],
                       check=True, env={**os.environ, **ONE_THREAD})
        print(f"generated {a.preset} data in {time.perf_counter() - t0:.0f} s")
    rows = []
    for name in a.variants.split(","):
        cmd = [sys.executable, __file__, "--out", str(a.out), "--split", a.split, "--config", a.config,
               "--num-threads", str(a.num_threads), "--variant", name, *a.overrides]
        cmd += [x for k in ("checkpoint", "dinov2") if getattr(a, k) for x in (f"--{k}", getattr(a, k))]
        (a.out / name).mkdir(parents=True, exist_ok=True)
        log = a.out / name / "stderr.log"  # the run's log, written as it goes
        with open(log, "w") as err:
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        stderr = log.read_text()
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode or not line:
            print(stderr[-3000:], file=sys.stderr)
            return 1
        for err in [ln for ln in stderr.splitlines() if " ERROR " in ln][:5]:
            print(f"{name}: {err}", file=sys.stderr)
        rows.append(json.loads(line[0][len("RESULT "):]))
        print(f"{name}: score {rows[-1]['score']:.3f} in {rows[-1]['wall_s']:.0f} s", flush=True)
        (a.out / "results.json").write_text(json.dumps(rows, indent=1))  # after each: a timeout keeps the rest
    print(table(rows))
    if a.ceilings:
        rates = measure_ceilings(a, rows[0]["variant"])
        (a.out / "ceilings.json").write_text(json.dumps(rates, indent=1))
        print(ceiling_table(rows, rates))
    return 0


def _work_dir(out: Path, name: str) -> Path:
    """The caches a variant reads and writes (variants with the same pairs share one)."""
    return out / ("work-exhaustive" if name == "exhaustive" else "work-baseline" if name == "baseline" else
                  "work-sequence" if "sequence" in name else "work-shortlist")


def measure_ceilings(a: argparse.Namespace, name: str) -> dict:
    """benchmarks/ceilings.py on ``name``'s caches of its largest dataset, with ``name``'s settings."""
    work = _work_dir(a.out, name)
    views = json.loads((work / "views.json").read_text())
    ds = max(views, key=lambda d: len(views[d]["shortlisted"]))
    js = a.out / "ceilings-raw.json"
    subprocess.run([sys.executable, str(Path(__file__).with_name("ceilings.py")), "--work", str(work / ds),
                    "--images", str(a.out / "data" / a.split / ds), "--config", a.config, "--json", str(js),
                    *VARIANTS[name], *a.overrides], check=True)
    return {"dataset": ds, "variant": name, **json.loads(js.read_text())}


def ceiling_table(rows: List[dict], rates: dict) -> str:
    """Per variant and stage: seconds, the ceiling's seconds for the same work, their ratio."""
    from ceilings import reconstruction_ceiling  # benchmarks/ceilings.py

    per = {"features": ("images", "features_images_per_s"), "retrieval": ("images", "retrieval_images_per_s"),
           "matching": ("pairs", "matching_pairs_per_s"), "verification": ("pairs", "verification_pairs_per_s")}
    lines = [f"ceilings: each stage alone on preloaded inputs ({rates['dataset']}, {rates['variant']}'s settings); "
             "stage s / ceiling s = ratio ('cached': the variant reused another's results)"]
    for r in rows:
        cells = []
        for stage, (count, key) in per.items():
            rate = rates.get(key)
            t = r["timings"].get(stage, 0.0)
            ceil = r[count] / rate if rate else None
            cells.append(f"{stage} " + ("no ceiling" if ceil is None else "cached" if t < 0.5 * ceil and stage != "retrieval"
                                          else f"{t:.1f}/{ceil:.1f} = {t / ceil:.1f}x"))
        ceil = reconstruction_ceiling(r.get("timeline", {}), r.get("reconstruction_workers", 1))
        t = r["timings"].get("reconstruction", 0.0)
        cells.append(f"reconstruction {t:.1f}/{ceil:.1f} = {t / max(ceil, 1e-9):.1f}x")
        lines.append(f"{r['variant']:<14} " + "; ".join(cells))
    return "\n".join(lines)



def main_on_split(out: Path, prepare: Callable[[Path], str], rest: List[str]) -> int:
    """:func:`main` on a labelled ``train`` split that ``prepare(out / "data")`` lays out once (it
    returns the line to print); later calls reuse it. The real-data benchmarks go through this."""
    data = out / "data"
    if not (data / "train_labels.csv").is_file():
        print(prepare(data))
    return main(["--out", str(out), "--split", "train", *rest])


if __name__ == "__main__":
    sys.exit(main())
