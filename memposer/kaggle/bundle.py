"""One folder to upload as a Kaggle dataset: wheels, checkpoints, configs, notebook, manifest.

Layout of a bundle::

    wheels/          memposer's wheel + every dependency not left to Kaggle's preinstalled set
    checkpoints/     the checkpoint(s) chosen with --checkpoint (the first is the default)
    configs/         the checkout's configs/ (inference presets under configs/infer/)
    kaggle_submission.ipynb
    manifest.json    versions, sha256 of every file, what was left to Kaggle's preinstalled set
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from memposer.kaggle.deps import DEFAULT_PREINSTALLED, Dist, installed_dists, marker_environment, matches_any, walk
from memposer.kaggle.wheels import (Target, build_own_wheel, collect_wheels, place, resolve_for_target, sha256,
                                    source_root, wheel_metadata)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
NOTEBOOK = Path("notebooks") / "kaggle_submission.ipynb"
NEVER_CARRIED = ("pip", "setuptools", "wheel")  # pip's own tooling is always there


def _git(root: Path, *args: str) -> Optional[str]:
    proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MANIFEST).is_file() and not force:
            raise FileExistsError(f"{out} is not empty and holds no {MANIFEST}; choose an empty folder or pass --force")
        for sub in ("wheels", "checkpoints", "configs"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _entry(path: Path, root: Path) -> Dict[str, object]:
    return {"file": path.relative_to(root).as_posix(), "sha256": sha256(path), "bytes": path.stat().st_size}


def dependencies_to_carry(own: Dist, target: Target, preinstalled: Sequence[str], constraints: Sequence[Path] = (),
                          pip_args: Sequence[str] = (), own_wheel: Optional[Path] = None):
    """memposer's dependency closure for ``target`` minus the preinstalled set.

    Returns ``(carried dists, {preinstalled name: version seen here or resolved, or None}, required-by map)``.
    """
    if target.is_local:
        dists, env = installed_dists(), marker_environment()
    else:
        dists, env = resolve_for_target(own_wheel, target, constraints, pip_args), marker_environment(target.python)
    dists.pop(own.name, None)
    closure = walk(own.requires, dists, env, root_name=own.name,
                   stop=lambda n: matches_any(n, NEVER_CARRIED) or matches_any(n, preinstalled))
    if closure.missing:
        where = "installed here (pip install -e . first)" if target.is_local else "resolved by pip"
        raise RuntimeError(f"memposer needs packages that are not {where}: " + ", ".join(
            f"{n} (for {', '.join(sorted(r))})" for n, r in sorted(closure.missing.items())))
    left = {n: dists[n].version if n in dists else None for n in closure.stopped}
    return sorted(closure.needed.values(), key=lambda d: d.name), left, closure.stopped


def build_bundle(out: Path, target: Optional[Target] = None, checkpoints: Sequence[Path] = (),
                 default_config: Optional[str] = None, dinov2: Optional[str] = None,
                 preinstalled: Sequence[str] = DEFAULT_PREINSTALLED, constraints: Sequence[Path] = (),
                 wheel_cache: Optional[Path] = None, source: Optional[Path] = None, pip_args: Sequence[str] = (),
                 force: bool = False) -> Path:
    """Fill ``out`` with everything a no-internet Kaggle notebook needs; return the manifest path.

    ``dinov2`` is recorded as the path the notebook should use (e.g. under ``/kaggle/input``);
    the weights are never copied or downloaded.
    """
    t0 = time.time()
    out, target, root = Path(out), target or Target(), source_root(source)
    for ck in checkpoints:
        if not Path(ck).is_file():
            raise FileNotFoundError(f"checkpoint {ck} does not exist")
    _prepare_out(out, force)
    cache = Path(wheel_cache) if wheel_cache else Path.home() / ".cache" / "memposer" / "wheels"

    own_wheel = build_own_wheel(root, out / "wheels")
    own = wheel_metadata(own_wheel)
    carried, left, required_by = dependencies_to_carry(own, target, preinstalled, constraints, pip_args, own_wheel)
    log.info("%d dependencies to carry; left to Kaggle: %s", len(carried), ", ".join(sorted(left)))
    wheels = collect_wheels(carried, cache, target, pip_args)
    placed = [own_wheel] + [place(wheels[d.name], out / "wheels") for d in carried]

    ck_entries = [_entry(place(Path(ck), out / "checkpoints"), out) for ck in checkpoints]
    if (root / "configs").is_dir():
        shutil.copytree(root / "configs", out / "configs")
    cfg_entries = [_entry(p, out) for p in sorted((out / "configs").rglob("*")) if p.is_file()]
    if default_config and not Path(default_config).is_file() \
            and not (out / "configs" / "infer" / f"{Path(default_config).stem}.yaml").is_file():
        log.warning("default config %s is neither a file nor configs/infer/%s.yaml; the pipeline must know it "
                    "by name", default_config, Path(default_config).stem)
    if (root / NOTEBOOK).is_file():
        shutil.copy2(root / NOTEBOOK, out / NOTEBOOK.name)

    manifest = {
        "memposer_version": own.version,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git(root, "rev-parse", "HEAD"),
        "git_dirty": bool(_git(root, "status", "--porcelain", "--", "memposer", "configs", "setup.cfg")),
        "target": target.describe(),
        "install": f"pip install --no-index --find-links <BUNDLE>/wheels memposer=={own.version}",
        "wheels": [{"name": d.name, "version": d.version, **_entry(p, out)}
                   for d, p in zip([own] + carried, placed)],
        "left_to_kaggle": [{"name": n, "version_here": v, "required_by": sorted(required_by[n])}
                           for n, v in sorted(left.items())],
        "checkpoints": ck_entries,
        "configs": cfg_entries,
        "default_config": default_config,
        "dinov2": dinov2,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log.info("bundle %s: %d wheels, %d checkpoints, %.0f MB, %.1f s", out, len(placed), len(ck_entries), size / 1e6,
             time.time() - t0)
    return path


def read_manifest(bundle: Path) -> Dict:
    """The manifest of a bundle folder (clear error when the folder is not a bundle)."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{bundle} is not a memposer bundle (no {MANIFEST}); build one with "
                                "`python -m memposer.kaggle bundle --out DIR`")
    return json.loads(path.read_text())


def verify_bundle(bundle: Path) -> List[str]:
    """Files of the manifest that are missing or whose sha256 differs (empty list: intact)."""
    manifest, bad = read_manifest(bundle), []
    for key in ("wheels", "checkpoints", "configs"):
        for e in manifest.get(key, []):
            p = Path(bundle) / e["file"]
            if not p.is_file() or sha256(p) != e["sha256"]:
                bad.append(e["file"])
    return bad
