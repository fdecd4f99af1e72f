"""Score a submission with the IMC2025 metric from the command line.

    python -m memposer.evaluate --labels train_labels.csv --thresholds train_thresholds.csv submission.csv [--table] [--dataset X]

Prints per-dataset score, mAA and clusterness (percent) and the final score; ``--table`` adds the
per-image registration table. Bad input files give a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from memposer.data.imc import read_poses, read_thresholds
from memposer.metric import HEURISTIC_CONF, Result, default_conf, score_submission

log = logging.getLogger("memposer.evaluate")

POSE_COLUMNS = ("dataset", "scene", "image", "rotation_matrix", "translation_vector")


class InputError(Exception):
    """A user-side problem with an input file."""


def check_csv(path: Path, columns, numbers: Optional[Dict[str, int]] = None) -> None:
    """Raise :class:`InputError` naming the file and line of the first malformed row."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            for c in columns:
                if row.get(c) is None:
                    raise InputError(f"{path}:{line}: too few fields")
            for c, n in (numbers or {}).items():
                text = row[c].strip()
                try:
                    vals = [float(v) for v in text.split(";")] if text else []
                except ValueError:
                    raise InputError(f"{path}:{line}: column {c} is not ';'-separated numbers: {text[:60]!r}") from None
                if len(vals) != n and not (c == "thresholds" and vals):
                    raise InputError(f"{path}:{line}: column {c} needs {n} numbers, got {len(vals)}")


def load(labels: Path, thresholds: Path, submission: Path):
    """Read and validate the three files."""
    nums = {"rotation_matrix": 9, "translation_vector": 3}
    check_csv(labels, POSE_COLUMNS, nums)
    check_csv(submission, POSE_COLUMNS, nums)
    check_csv(thresholds, ("dataset", "scene", "thresholds"), {"thresholds": 1})
    return read_poses(labels), read_thresholds(thresholds), read_poses(submission)


def format_summary(result: Result) -> str:
    lines = [f"{'dataset':<32} {'score':>7} {'mAA':>7} {'clust.':>7}"]
    for ds, d in result.datasets.items():
        lines.append(f"{ds:<32} {100 * d.score:7.2f} {100 * d.mAA:7.2f} {100 * d.clusterness:7.2f}")
    mAA = np.mean([d.mAA for d in result.datasets.values()]) if result.datasets else 0.0
    cl = np.mean([d.clusterness for d in result.datasets.values()]) if result.datasets else 0.0
    lines.append(f"{'final (mean over datasets)':<32} {100 * result.score:7.2f} {100 * mAA:7.2f} {100 * cl:7.2f}")
    return "\n".join(lines)


def format_table(result: Result) -> str:
    lines = ["dataset,scene,image,cluster,error,passed,used_for_alignment,in_triplet"]
    for r in result.table:
        passed = "".join("1" if p else "0" for p in r.passed)
        err = "" if not np.isfinite(r.error) else f"{r.error:.6g}"
        lines.append(f"{r.dataset},{r.scene},{r.image},{r.cluster or ''},{err},{passed},{int(r.used_for_alignment)},{int(r.in_triplet)}")
    return "\n".join(lines)


def main(labels: Path, thresholds: Path, submission: Path, dataset: Optional[str] = None, table: bool = False,
         conf: Optional[dict] = None) -> Result:
    """Score ``submission`` and print the summary (and the table)."""
    gt, ths, sub = load(Path(labels), Path(thresholds), Path(submission))
    if dataset is not None:
        if dataset not in {r.dataset for r in gt}:
            raise InputError(f"dataset {dataset!r} is not in {labels}")
        gt = [r for r in gt if r.dataset == dataset]
        sub = [r for r in sub if r.dataset == dataset]
    try:
        result = score_submission(gt, sub, ths, conf)
    except ValueError as e:
        raise InputError(str(e)) from None
    if table:
        print(format_table(result))
        print()
    print(format_summary(result))
    return result


def add_score_args(p: argparse.ArgumentParser) -> None:
    """The submission, labels, thresholds and ``--heuristic`` arguments of every scoring CLI."""
    p.add_argument("submission", type=Path)
    p.add_argument("--labels", type=Path, required=True, help="train_labels.csv")
    p.add_argument("--thresholds", type=Path, required=True, help="train_thresholds.csv")
    p.add_argument("--heuristic", action="store_true",
                   help="inl_cf=0.8, strict_cf=0.5 (faster search of earlier challenges) instead of the exhaustive one")


def score_conf(args: argparse.Namespace) -> Dict[str, float]:
    """The metric's settings chosen by :func:`add_score_args`'s flags."""
    return {**default_conf, **(HEURISTIC_CONF if args.heuristic else {})}


def exit_status(run: Callable[[], object], logger: logging.Logger) -> int:
    """0 after ``run()``; 2 when it raises :class:`InputError`, logged as one line without a traceback."""
    try:
        run()
    except InputError as e:
        logger.error("%s", e)
        return 2
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.evaluate", description=__doc__.splitlines()[0])
    add_score_args(p)
    p.add_argument("--dataset", help="score this dataset only")
    p.add_argument("--table", action="store_true", help="print the per-image registration table")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return exit_status(lambda: main(args.labels, args.thresholds, args.submission, args.dataset, args.table,
                                    score_conf(args)), log)


if __name__ == "__main__":
    sys.exit(cli())
