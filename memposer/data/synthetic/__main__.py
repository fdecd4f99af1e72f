"""CLI: ``python -m memposer.data.synthetic --out DIR --preset demo --seed 0 [--split train|test|both]``."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from .competition import generate_competition
from .generate import available_presets, load_conf

log = logging.getLogger("memposer.data.synthetic")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.data.synthetic", description=__doc__)
    p.add_argument("--out", required=True, help="output folder (IMC2025 layout)")
    p.add_argument("--preset", default="demo", help=f"preset name or YAML path (presets: {', '.join(available_presets())})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="both", choices=["train", "test", "both"])
    p.add_argument("--datasets", type=int, help="override the number of datasets per split")
    p.add_argument("--long-side", type=int, help="override the image size (pixels of the longer side)")
    p.add_argument("--overwrite", action="store_true", help="replace data already in --out")
    p.add_argument("--workers", type=int, default=1, help="scenes rendered in parallel processes (same files with any number)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    over = {k: v for k, v in (("datasets", args.datasets), ("long_side", args.long_side)) if v is not None}
    if "datasets" in over:
        over["test"] = {"datasets": args.datasets}
    try:
        conf = load_conf(args.preset, **over)
        out = generate_competition(args.out, conf, seed=args.seed, split=args.split,
                                   progress=not args.quiet, overwrite=args.overwrite,
                                   workers=args.workers)
    except (ValueError, FileExistsError, OSError) as e:
        log.error("%s", e)
        return 2
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
