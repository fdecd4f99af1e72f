"""``python infer.py --data DIR --out submission.csv`` (also ``python -m memposer.pipeline.run``).

Settings come from a preset (``--config default|cpu|...`` or a YAML path), then the flags below,
then ``section.key=value`` overrides, e.g. ``pairs.k=15 clustering.method=louvain``.
When ``DIR`` is a labelled split (``train/`` beside ``train_labels.csv``) the score is printed.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

from memposer.config import deep_merge, find_preset, parse_overrides, read_yaml, set_override

log = logging.getLogger("memposer.infer")


def load_infer_config(name: str, overrides: List[str]) -> dict:
    from memposer.pipeline.run import default_conf  # noqa: PLC0415
    conf = deep_merge(default_conf, read_yaml(find_preset("infer", name)))
    for key, value in parse_overrides(overrides):
        set_override(conf, key, value, default_conf)
    return conf


def find_labels(data_dir: Path) -> Optional[Tuple[Path, Path]]:
    """``<split>_labels.csv`` and ``<split>_thresholds.csv`` beside ``<split>/``, if both exist."""
    split = data_dir.resolve()
    labels = split.parent / f"{split.name}_labels.csv"
    ths = split.parent / f"{split.name}_thresholds.csv"
    return (labels, ths) if labels.is_file() and ths.is_file() else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infer.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="competition split: one folder per dataset")
    p.add_argument("--out", type=Path, default=Path("submission.csv"))
    p.add_argument("--config", default="default", help="preset name under configs/infer/ or a YAML path")
    p.add_argument("--work", type=Path, help="cache folder (default: <out folder>/memposer_work)")
    p.add_argument("--checkpoint", help="MemPoser checkpoint (needed by --poses memposer|seeded), e.g. "
                   "checkpoints/memposer-tracks.safetensors")
    p.add_argument("--dinov2", help="DINOv2 weights file or folder (global descriptors for retrieval)")
    p.add_argument("--poses", choices=("colmap", "memposer", "seeded"),
                   help="default: seeded with --checkpoint, else colmap")
    p.add_argument("--num-threads", type=int, help="COLMAP threads; 1 gives reproducible output")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--datasets", help="comma-separated subset of datasets")
    p.add_argument("--labels", type=Path, help="labels CSV to score against (default: found beside --data)")
    p.add_argument("--thresholds", type=Path, help="thresholds CSV (default: found beside --data)")
    p.add_argument("--report", type=Path, help="write an HTML report here (needs labels)")
    p.add_argument("--export", type=Path, help="write every cluster as a COLMAP model here: "
                   "DIR/<dataset>/<cluster>/{cameras,images,points3D}.bin, DIR/<dataset>/clusters.csv and pairs.txt")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def apply_flags(conf: dict, a: argparse.Namespace) -> dict:
    if a.dinov2:
        conf["retrieval"]["weights"] = a.dinov2
    if a.poses:
        conf["reconstruction"]["poses"] = a.poses
    elif a.checkpoint:  # seeded measured better than colmap alone (docs/results.md): the default with a model
        conf["reconstruction"]["poses"] = "seeded"
    if a.num_threads is not None:
        conf["reconstruction"]["num_threads"] = a.num_threads
        conf["reconstruction"].setdefault("seeding", {})["num_threads"] = a.num_threads
    if a.device:
        for s in ("features", "retrieval", "matching"):
            conf[s]["device"] = a.device
        conf["device"] = a.device
    conf["matching"]["features"] = conf["features"]["extractor"]  # LightGlue weights follow the extractor
    return conf


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    colmap_quiet()
    try:
        conf = apply_flags(load_infer_config(args.config, overrides), args)
        predictor = None
        if conf["reconstruction"]["poses"] != "colmap":
            if not args.checkpoint:
                raise ValueError(f"--poses {conf['reconstruction']['poses']} needs --checkpoint CKPT")
            from memposer.pipeline.predict import load_predictor  # noqa: PLC0415
            predictor = load_predictor(args.checkpoint, conf["device"])
        from memposer.pipeline.run import format_timings, run_pipeline, summary_counts  # noqa: PLC0415
        t0 = time.perf_counter()
        res = run_pipeline(args.data, args.out, conf, args.work, predictor,
                           args.datasets.split(",") if args.datasets else None, progress=not args.quiet,
                           export_dir=args.export)
    except (FileNotFoundError, ValueError, KeyError) as e:
        log.error("%s", e)
        return 2
    counts = summary_counts(res.records)
    print(f"\nwrote {args.out}: {counts['images']} images, {counts['registered']} registered, "
          f"{len(res.failed)} failed datasets, {time.perf_counter() - t0:.1f} s")
    print(format_timings(res.timings, counts["images"]))
    labels = (args.labels, args.thresholds) if args.labels and args.thresholds else find_labels(args.data)
    if labels:
        score(labels, args, res)
    elif args.report:
        log.error("--report needs labels (--labels/--thresholds or <split>_labels.csv beside --data)")
    return 0


def score(labels: Tuple[Path, Path], args: argparse.Namespace, res) -> None:
    from memposer.evaluate import format_summary, load  # noqa: PLC0415
    from memposer.metric import score_submission  # noqa: PLC0415

    gt, ths, sub = load(labels[0], labels[1], args.out)
    datasets = {r.dataset for r in res.records}  # only what ran (--datasets may pick a subset)
    gt = [r for r in gt if r.dataset in datasets]
    result = score_submission(gt, sub, ths)
    print(f"\nscore against {labels[0]}:")
    print(format_summary(result))
    if args.report:
        from memposer.report import write_report  # noqa: PLC0415
        index = write_report(gt, ths, sub, args.report, views=res.views, result=result)
        print(f"report: {index}")


def colmap_quiet() -> None:
    from memposer.colmap import quiet  # noqa: PLC0415
    quiet()


if __name__ == "__main__":
    sys.exit(main())
