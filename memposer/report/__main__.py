"""``python -m memposer.report --labels L --thresholds T submission.csv --out DIR [--views views.json]``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional

from memposer.evaluate import InputError, add_score_args, exit_status, score_conf

log = logging.getLogger("memposer.report")


def read_views(path: Optional[Path]) -> Optional[dict]:
    """The pipeline's ``views.json``, or ``None`` without one; ``InputError`` when it is missing or not JSON."""
    if path is None:
        return None
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def cli(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.report",
                                description="Write an HTML diagnostics report of a submission scored against labels.")
    add_score_args(p)
    p.add_argument("--out", type=Path, required=True, help="report folder (created; files in it are overwritten)")
    p.add_argument("--views", type=Path, help="the pipeline's views.json (pair graph, cluster thumbnails)")
    p.add_argument("--dataset", action="append", help="report this dataset only (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from memposer.report.build import write_report  # noqa: PLC0415

    def run() -> None:
        index = write_report(args.labels, args.thresholds, args.submission, args.out, read_views(args.views),
                             conf=score_conf(args), datasets=args.dataset, progress=not args.quiet)
        print(f"report: {index}")

    return exit_status(run, log)


if __name__ == "__main__":
    sys.exit(cli())
