"""CLI: ``python -m memposer.kaggle {bundle,verify,run,rehearse} ...``."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import List, Optional

log = logging.getLogger("memposer.kaggle")
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "kaggle_submission.ipynb"


def _bundle(a: argparse.Namespace) -> int:
    from memposer.kaggle.bundle import build_bundle
    from memposer.kaggle.deps import DEFAULT_PREINSTALLED
    from memposer.kaggle.wheels import DEFAULT_PLATFORM, Target

    if a.platform and not a.python:
        raise ValueError("--platform needs --python; without both the bundle is for this machine")
    target = Target(a.python, a.platform or [DEFAULT_PLATFORM]) if a.python else Target()
    pip_args = [arg for fl in a.find_links or [] for arg in ("--find-links", str(fl))]
    manifest = json.loads(build_bundle(
        a.out, target, a.checkpoint or [], a.config, a.dinov2, tuple(a.preinstalled or DEFAULT_PREINSTALLED),
        a.constraint or [], a.wheel_cache, a.source, pip_args, a.force).read_text())
    print(f"bundle ready: {a.out.resolve()} ({len(manifest['wheels'])} wheels, {len(manifest['checkpoints'])} "
          f"checkpoints; left to Kaggle: {', '.join(e['name'] for e in manifest['left_to_kaggle'])})")
    return 0


def _verify(a: argparse.Namespace) -> int:
    from memposer.kaggle.bundle import verify_bundle

    bad = verify_bundle(a.bundle)
    for f in bad:
        print(f"missing or changed: {f}")
    print("bundle intact" if not bad else f"{len(bad)} files missing or changed")
    return 1 if bad else 0


def _run(a: argparse.Namespace) -> int:
    from memposer.kaggle.runner import format_summary, run_competition

    conf = {"pipeline": shlex.split(a.pipeline) if a.pipeline else None, "poses": a.poses,
            "num_threads": a.num_threads}
    if a.budget is not None:
        conf["budget_per_dataset_s"] = a.budget
    results = run_competition(a.competition, a.out, a.bundle, a.checkpoint, a.dinov2, a.config, conf, a.work)
    print(format_summary(results))
    return 0


def _rehearse(a: argparse.Namespace) -> int:
    from memposer.kaggle.rehearse import rehearse

    env = dict(kv.split("=", 1) for kv in a.env or [])
    r = rehearse(a.notebook, a.bundle, a.competition, a.work, env, a.timeout)
    print(f"submission: {r.submission}\nexecuted notebook: {r.executed_notebook}\nnotebook: {r.seconds:.1f} s")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.kaggle", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    b = sub.add_parser("bundle", help="fill a folder to upload as a Kaggle dataset")
    b.add_argument("--out", required=True, type=Path, help="bundle folder (empty, or an earlier bundle)")
    b.add_argument("--python", help="target Python, e.g. 3.11 (default: this interpreter, installed wheels)")
    b.add_argument("--platform", action="append", help="target platform tag, repeatable (default with --python: "
                   "manylinux_2_35_x86_64, Kaggle's glibc; older manylinux tags are added)")
    b.add_argument("--checkpoint", action="append", type=Path, help="checkpoint to carry, repeatable; first = default")
    b.add_argument("--config", help="default inference config the notebook uses (preset name or configs/ path)")
    b.add_argument("--dinov2", help="DINOv2 weights path as the notebook will see it (recorded, not copied)")
    b.add_argument("--preinstalled", action="append", help="replace the list of packages left to Kaggle "
                   "(fnmatch patterns, repeatable)")
    b.add_argument("--constraint", action="append", type=Path, help="pip constraints for the target resolution, "
                   "e.g. `pip freeze` of a Kaggle notebook")
    b.add_argument("--wheel-cache", type=Path, help="reusable wheel folder (default ~/.cache/memposer/wheels)")
    b.add_argument("--find-links", action="append", type=Path, help="extra local wheel folder for pip (target mode)")
    b.add_argument("--source", type=Path, help="memposer checkout to build (default: this one)")
    b.add_argument("--force", action="store_true", help="write into a non-empty folder that is not a bundle")
    b.set_defaults(func=_bundle)

    v = sub.add_parser("verify", help="check a bundle's files against its manifest hashes")
    v.add_argument("bundle", type=Path)
    v.set_defaults(func=_verify)

    r = sub.add_parser("run", help="pose every dataset of COMPETITION/test into a submission (the notebook's work)")
    r.add_argument("--competition", required=True, help="folder holding test/")
    r.add_argument("--out", default="/kaggle/working/submission.csv")
    r.add_argument("--bundle"), r.add_argument("--checkpoint"), r.add_argument("--dinov2"), r.add_argument("--config")
    r.add_argument("--poses", choices=["colmap", "memposer", "seeded"])
    r.add_argument("--num-threads", type=int)
    r.add_argument("--budget", type=float, help="seconds per dataset")
    r.add_argument("--pipeline", help="pipeline command (default: python -m memposer.pipeline.cli)")
    r.add_argument("--work", help="scratch folder (default: a temporary one)")
    r.set_defaults(func=_run)

    h = sub.add_parser("rehearse", help="run the notebook here as Kaggle would (Kaggle-like venv, bundle only)")
    h.add_argument("--bundle", required=True, type=Path)
    h.add_argument("--competition", required=True, type=Path)
    h.add_argument("--work", required=True, type=Path, help="new scratch folder: kaggle/input, kaggle/working, venv")
    h.add_argument("--notebook", type=Path, default=NOTEBOOK)
    h.add_argument("--env", action="append", help="KEY=VALUE for the notebook's top cell (e.g. MEMPOSER_BUDGET_S=60)")
    h.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    h.set_defaults(func=_rehearse)

    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return a.func(a)
    except (FileNotFoundError, FileExistsError, RuntimeError, ValueError) as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
