"""The README's first command: make a small synthetic competition, run the pipeline on it, print the score.

``python -m memposer.demo [--out demo] [--config cpu] [--split test]``. The data is generated once
(deterministic by ``--seed``) and reused; the pipeline's caches live beside it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional



def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("demo"), help="folder for the data, caches and submission")
    p.add_argument("--preset", default="demo", help="synthetic preset (configs/synthetic/)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="cpu", help="pipeline preset (configs/infer/)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    args, rest = p.parse_known_args(argv)
    verbose = "-v" in rest or "--verbose" in rest
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.out / "data"
    if not (data / f"{args.split}_labels.csv").is_file():
        from memposer.data.synthetic import __main__ as synth  # noqa: PLC0415
        print(f"generating the synthetic '{args.preset}' competition in {data}")
        code = synth.main(["--out", str(data), "--preset", args.preset, "--seed", str(args.seed), "--quiet"])
        if code:
            return code
    else:
        print(f"reusing the synthetic competition in {data}")
    from memposer.pipeline.cli import main as infer  # noqa: PLC0415
    return infer(["--data", str(data / args.split), "--out", str(args.out / "submission.csv"), "--config", args.config,
                  "--work", str(args.out / "work"), "--num-threads", "1", *rest])


if __name__ == "__main__":
    sys.exit(main())
