"""The upright probe alone (``features.upright``): which images of each dataset it would turn, and its cost.

    python benchmarks/upright.py --data ../shared/data/imc_real/train [--config cpu] [--turn-files 0.3]
    python benchmarks/upright.py --beer ../shared/data/beer --every 3

Prints, per dataset, how many images the probe turns by 1, 2 and 3 quarter turns and its wall time.
On data with no turned images any turn is a false one: the pipeline's output with ``upright`` on
equals the output with it off exactly when nothing is turned (the features are the same).
``--turn-files F`` first writes a copy of each dataset with a share F of its images turned by a
random quarter turn (seeded), and also prints how many of those the probe undoes: turned back to
the orientation of the rest.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import h5py
import numpy as np
from PIL import Image


def turn_copy(src: Path, dst: Path, share: float, seed: int) -> Dict[str, int]:
    """Copy a dataset folder, turning a share of its images by 1-3 quarter turns; ``{name: turns}``."""
    from memposer.data.imc import is_image_file

    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    applied = {}
    for p in sorted(src.iterdir()):
        if not is_image_file(p):
            continue
        k = int(rng.integers(1, 4)) if rng.random() < share else 0
        if k:
            with Image.open(p) as im:
                im.rotate(90 * k, expand=True).save(dst / p.name, quality=95)
        else:
            shutil.copy(p, dst / p.name)
        applied[p.name] = k
    return applied


def probe(folder: Path, names: List[str], conf: dict) -> Dict[str, int]:
    from memposer.pipeline.features import image_turns, pick_device

    up = {**conf, "upright": {**conf.get("upright", {}), "enabled": True}}
    with h5py.File(Path(tempfile.mkdtemp()) / "probe.h5", "w") as f:
        return image_turns(folder, names, f, up, pick_device(conf["device"]), progress=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a competition split (one folder per dataset)")
    src.add_argument("--beer", type=Path, help="the beer frames (../shared/data/beer)")
    ap.add_argument("--every", type=int, default=1, help="beer: every n-th frame")
    ap.add_argument("--config", default="default", help="infer preset whose features.upright to use")
    ap.add_argument("--datasets", default="", help="comma-separated subset")
    ap.add_argument("--turn-files", type=float, default=0.0, help="share of images to turn first")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write each image's turn here ({dataset: {image: turn}})")
    a = ap.parse_args()

    from memposer.data.imc import scan_dataset_folder
    from memposer.pipeline.cli import load_infer_config

    conf = load_infer_config(a.config, [])["features"]
    if a.beer:
        folders = {"beer": (a.beer / "images", sorted(p.name for p in (a.beer / "images").iterdir())[::a.every])}
    else:
        wanted = set(filter(None, a.datasets.split(",")))
        folders = {d: (a.data / d, n) for d, n in scan_dataset_folder(a.data).items() if not wanted or d in wanted}
    tmp = Path(tempfile.mkdtemp())
    found: Dict[str, Dict[str, int]] = {}
    print("| dataset | images | turned x1 / x2 / x3 | undone / turned files | false turns | probe s |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |")
    for ds, (folder, names) in folders.items():
        applied = {}
        if a.turn_files > 0:
            applied = turn_copy(folder, tmp / ds, a.turn_files, a.seed)
            folder = tmp / ds
        t = time.perf_counter()
        turns = probe(folder, names, conf)
        dt = time.perf_counter() - t
        found[ds] = {n: int(turns[n]) for n in names}
        counts = np.bincount([turns[n] for n in names], minlength=4)
        undone = ""
        false = sum(turns[n] != 0 for n in names if not applied.get(n))  # images left as they were
        if applied:
            # undone: the probe's turn brings the file back to the majority's orientation
            fixed = sum((applied[n] + turns[n]) % 4 == 0 for n in names if applied[n])
            undone = f"{fixed} / {sum(1 for n in names if applied[n])}"
        print(f"| {ds} | {len(names)} | {counts[1]} / {counts[2]} / {counts[3]} | {undone} | {false} | {dt:.1f} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
