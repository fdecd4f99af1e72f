"""``python infer.py --data DIR --out submission.csv`` (also ``python -m memposer.pipeline.cli``).

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

from memposer.config import find_preset, merge_strict, parse_overrides, read_yaml, set_override
from memposer.pipeline import checks
from memposer.pipeline.checks import UsageError

log = logging.getLogger("memposer.infer")


def load_infer_config(name: str, overrides: List[str]) -> dict:
    """Defaults <- preset (every key checked) <- ``section.key=value`` overrides (every key checked)."""
    from memposer.pipeline.run import default_conf  # noqa: PLC0415
    conf = merge_strict(default_conf, read_yaml(find_preset("infer", name)))
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
    p.add_argument("-v", "--verbose", action="store_true", help="log every step, COLMAP's output and library warnings")
    return p


def apply_flags(conf: dict, a: argparse.Namespace, overrides: List[str] = ()) -> dict:
    """Flags over the config. ``poses``: ``--poses``, else ``reconstruction.poses=...``, else seeded
    when a checkpoint is given and the preset says colmap; a contradiction is an error."""
    if a.dinov2:
        conf["retrieval"]["weights"] = a.dinov2
    explicit = dict(parse_overrides(overrides)).get("reconstruction.poses")
    if a.poses and explicit and explicit != a.poses:
        raise UsageError(f"--poses {a.poses} contradicts reconstruction.poses={explicit}; give one of them")
    if a.poses:
        conf["reconstruction"]["poses"] = a.poses
    elif a.checkpoint and not explicit and conf["reconstruction"]["poses"] == "colmap":
        # seeded measured better than colmap alone (docs/results.md): the default with a model
        conf["reconstruction"]["poses"] = "seeded"
        log.info("poses: seeded (a --checkpoint was given; --poses colmap to map without it)")
    if a.checkpoint and conf["reconstruction"]["poses"] == "colmap":
        log.warning("--checkpoint %s is not used: poses colmap (%s)", a.checkpoint,
                    "reconstruction.poses=colmap" if explicit else "--poses colmap" if a.poses else "the preset")
    if a.num_threads is not None:
        conf["reconstruction"]["num_threads"] = a.num_threads
        conf["reconstruction"]["seeding"]["num_threads"] = a.num_threads
    if a.device:
        for s in ("features", "retrieval", "matching"):
            conf[s]["device"] = a.device
        conf["device"] = a.device
    return conf


def setup_logging(verbose: bool) -> None:
    """Quiet by default (warnings, progress bars, the summary); ``-v``: memposer's steps, COLMAP's log
    and library warnings too."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=fmt, force=True)
    logging.getLogger("memposer").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)  # library warnings go through logging: shown with -v only
    logging.getLogger("py.warnings").setLevel(logging.WARNING if verbose else logging.ERROR)
    from memposer.colmap import quiet  # noqa: PLC0415
    quiet(0 if verbose else 2)


def prepare(args: argparse.Namespace, overrides: List[str]):
    """Everything checked before a dataset starts: ``(data folder, work folder, conf, predictor)``."""
    conf = apply_flags(load_infer_config(args.config, overrides), args, overrides)
    checks.check_choices(conf)
    data = checks.resolve_data_dir(args.data)
    work = args.work or args.out.parent / "memposer_work"
    checks.check_output(args.out, work)
    checks.check_dinov2(conf)
    checks.check_retrieval_pca(conf)
    checks.check_checkpoint(args.checkpoint, conf["reconstruction"]["poses"])
    predictor = None
    if conf["reconstruction"]["poses"] != "colmap":
        from memposer.pipeline.predict import load_predictor  # noqa: PLC0415
        try:
            r = conf["reconstruction"]
            predictor = load_predictor(args.checkpoint, conf["device"], rolls=r["predict_rolls"],
                                       turns=r["predict_turns"])
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise UsageError(f"--checkpoint {args.checkpoint} cannot be loaded ({e}); pass a MemPoser "
                             f"checkpoint, e.g. checkpoints/memposer-tracks.safetensors") from None
    return data, work, conf, predictor


def main(argv: Optional[List[str]] = None) -> int:
    """Exit codes: 0 done; 1 the run wrote no pose at all (every dataset failed or none registered);
    2 a usage mistake, found before any dataset started."""
    args, overrides = build_parser().parse_known_args(argv)
    setup_logging(args.verbose)
    try:
        data, work, conf, predictor = prepare(args, overrides)
        from memposer.pipeline.run import format_timings, run_pipeline, summary_counts  # noqa: PLC0415
        t0 = time.perf_counter()
        res = run_pipeline(data, args.out, conf, work, predictor,
                           args.datasets.split(",") if args.datasets else None, progress=not args.quiet,
                           export_dir=args.export)
    except (FileNotFoundError, ValueError, KeyError) as e:  # UsageError is a ValueError
        log.error("%s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        return 2
    except OSError as e:  # e.g. the disk holding --out filled up during the run
        log.error("the run stopped: %s", e)
        print(f"error: the run stopped ({e}); {args.out} may be incomplete")
        return 1
    counts = summary_counts(res.records)
    print(f"\nwrote {args.out}: {counts['images']} images, {counts['registered']} registered, "
          f"{len(res.failed)} failed datasets, {time.perf_counter() - t0:.1f} s")
    print(format_timings(res.timings, counts["images"]))
    for ds in res.failed:
        print(f"failed dataset {ds}: {res.errors.get(ds, '')}; its images are nan in {args.out}")
    labels = (args.labels, args.thresholds) if args.labels and args.thresholds else find_labels(data)
    if labels:
        score(labels, args, res)
    elif args.report:
        log.error("--report needs labels (--labels/--thresholds or <split>_labels.csv beside --data)")
    ran = len(res.views) + len(res.failed)
    if ran and len(res.failed) == ran:
        print(f"error: every dataset failed ({', '.join(res.failed)}); {args.out} holds only nan poses")
        return 1
    if counts["registered"] == 0:
        print(f"error: no image got a pose; {args.out} holds {counts['images']} rows, all nan "
              f"(run with -v to see why)")
        return 1
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


if __name__ == "__main__":
    sys.exit(main())
