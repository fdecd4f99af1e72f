"""``python -m memposer.report --labels L --thresholds T submission.csv --out DIR [--views views.json]``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from memposer.evaluate import InputError
from memposer.metric import default_conf


def cli(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.report",
                                description="Write an HTML diagnostics report of a submission scored against labels.")
    p.add_argument("submission", type=Path)
    p.add_argument("--labels", type=Path, required=True, help="train_labels.csv")
    p.add_argument("--thresholds", type=Path, required=True, help="train_thresholds.csv")
    p.add_argument("--out", type=Path, required=True, help="report folder (created; files in it are overwritten)")
    p.add_argument("--views", type=Path, help="the pipeline's views.json (pair graph, cluster thumbnails)")
    p.add_argument("--dataset", action="append", help="report this dataset only (repeatable)")
    p.add_argument("--heuristic", action="store_true", help="metric search inl_cf=0.8, strict_cf=0.5")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("memposer.report")
    conf = {**default_conf, **({"inl_cf": 0.8, "strict_cf": 0.5} if args.heuristic else {})}
    from memposer.report.build import write_report  # noqa: PLC0415
    try:
        views = None
        if args.views:
            if not args.views.is_file():
                raise InputError(f"{args.views}: file not found")
            try:
                views = json.loads(args.views.read_text())
            except json.JSONDecodeError as e:
                raise InputError(f"{args.views}: not valid JSON ({e})") from None
        index = write_report(args.labels, args.thresholds, args.submission, args.out, views, conf=conf,
                             datasets=args.dataset, progress=not args.quiet)
    except InputError as e:
        log.error("%s", e)
        return 2
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
