"""Write synthetic data in the IMC2025 competition layout.

``<out>/train/<dataset>/img_XXXX.png``, ``train_labels.csv``, ``train_thresholds.csv``; and
``<out>/test/<dataset>/*.png``, ``sample_submission.csv`` with the test answers kept aside in
``test_labels.csv`` / ``test_thresholds.csv``. ``<split>_intrinsics.csv`` holds every image's
pinhole intrinsics (the competition gives none; useful for training and checks).
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..imc import OUTLIER_SCENE, PoseRecord, nan_records, write_poses, write_thresholds
from .generate import load_conf, random_scene_spec, render_scene

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (split, dataset, scene): adding datasets never changes earlier ones."""
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in key)))


def plan_dataset(conf: dict, rng: np.random.Generator) -> dict:
    """Scene specs of one dataset: look-alike scenes (shared style and texture family) plus outliers."""
    style, family = str(rng.choice(conf["styles"])), str(rng.choice(conf["families"]))
    n_scenes = int(rng.integers(conf["scenes_per_dataset"][0], conf["scenes_per_dataset"][1] + 1))
    n_out = int(rng.integers(conf["outliers_per_dataset"][0], conf["outliers_per_dataset"][1] + 1))
    scenes = []
    for k in range(n_scenes):
        same = k == 0 or rng.random() < conf["p_lookalike"]
        scenes.append(random_scene_spec(conf, rng, style=style if same else None, family=family if same else None))
    others = [f for f in conf["families"] if f != family] or list(conf["families"])
    outliers = [random_scene_spec(conf, rng, family=str(rng.choice(others)), n_images=1) for _ in range(n_out)]
    return dict(style=style, family=family, scenes=scenes, outliers=outliers)


def _write_intrinsics(rows: List[list], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["dataset", "image", "width", "height", "fx", "fy", "cx", "cy"])
        w.writerows(rows)


def _render_unit(sconf: dict, seed: int, key: tuple, spec: dict) -> dict:
    """Render one scene (or one outlier image) from its own random stream; picklable result."""
    res = render_scene(spec, _rng(seed, *key), sconf)
    return {k: res[k] for k in ("images", "K", "R", "t", "thresholds")}


def _units(split_id: int, plans: List[dict]) -> List[tuple]:
    """Every scene, then every outlier, of each dataset in plan order: ``(dataset index, rng key, spec)``."""
    units = []
    for d, plan in enumerate(plans):
        units += [(d, (split_id, d, k), spec) for k, spec in enumerate(plan["scenes"])]
        units += [(d, (split_id, d, 1000 + j), spec) for j, spec in enumerate(plan["outliers"])]
    return units


def save_dataset(out_dir: Path, split: str, seed: int, d: int, plan: dict, rendered: List[dict]) -> dict:
    """Write dataset ``d`` of a split from its rendered scenes then outliers (plan order); its
    records, thresholds and intrinsics rows."""
    split_id = SPLITS.index(split)
    dataset = f"{plan['family']}_{plan['style']}_{d:02d}"
    records: List[PoseRecord] = []
    thresholds: Dict[str, List[float]] = {}
    intr: List[list] = []
    views = []  # (scene name, image, K, R or None, t or None)
    for k, (spec, res) in enumerate(zip(plan["scenes"], rendered)):
        name = f"{spec['family']}_{spec['style']}_{chr(ord('a') + k)}"
        thresholds[name] = res["thresholds"]
        views += [(name, im, K, R, t) for im, K, R, t in zip(res["images"], res["K"], res["R"], res["t"])]
    for res in rendered[len(plan["scenes"]):]:
        views.append((OUTLIER_SCENE, res["images"][0], res["K"][0], None, None))
    folder = out_dir / split / dataset
    folder.mkdir(parents=True, exist_ok=True)
    order = _rng(seed, split_id, d, 9999).permutation(len(views))  # names must not reveal the scene
    for i, v in enumerate(order):
        scene, im, K, R, t = views[v]
        image = f"img_{i + 1:04d}.png"
        Image.fromarray(im).save(folder / image)
        records.append(PoseRecord(dataset, scene, image, R, t))
        intr.append([dataset, image, im.shape[1], im.shape[0], *(repr(float(x)) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))])
    return dict(dataset=dataset, records=records, thresholds=thresholds, intrinsics=intr)


def generate_split(out_dir: Path, split: str, conf: dict, seed: int, progress: bool = True, workers: int = 1) -> dict:
    """Render one split under ``out_dir/<split>/``; returns its records, thresholds and intrinsics.

    ``workers`` > 1 renders scenes in parallel processes; every scene has its own random stream,
    so the files are the same with any number of workers.
    """
    split_id = SPLITS.index(split)
    sconf = load_conf({**{k: v for k, v in conf.items() if k != "test"}, **(conf.get("test") or {})}) if split == "test" else conf
    plans = [plan_dataset(sconf, _rng(seed, split_id, d)) for d in range(int(sconf["datasets"]))]
    units = _units(split_id, plans)
    # Biggest scenes first so that one large scene started last does not leave the other workers idle.
    order = sorted(range(len(units)), key=lambda i: -units[i][2]["n_images"])
    parallel = workers > 1 and len(units) > 1
    results: Dict[int, dict] = {}
    with tqdm(total=sum(u[2]["n_images"] for u in units), desc=f"synthetic {split}", unit="img",
              disable=not progress) as bar, \
            (ProcessPoolExecutor(min(workers, len(units))) if parallel else nullcontext()) as pool:
        jobs = {i: pool.submit(_render_unit, sconf, seed, *units[i][1:]) for i in order} if parallel else {}
        for i in order:
            results[i] = jobs[i].result() if parallel else _render_unit(sconf, seed, *units[i][1:])
            bar.update(units[i][2]["n_images"])
    rendered: Dict[int, List[dict]] = {d: [] for d in range(len(plans))}
    for i, (d, _, _) in enumerate(units):
        rendered[d].append(results[i])
    parts = [save_dataset(out_dir, split, seed, d, p, rendered[d]) for d, p in enumerate(plans)]
    return dict(records=[r for p in parts for r in p["records"]],
                thresholds={p["dataset"]: p["thresholds"] for p in parts},
                intrinsics=[row for p in parts for row in p["intrinsics"]])


def generate_competition(out_dir: Path | str, conf: Optional[dict | str] = "demo", seed: int = 0,
                         split: str = "both", progress: bool = True, overwrite: bool = False, workers: int = 1) -> Path:
    """Render synthetic IMC2025 data with exact poses into ``out_dir``; returns ``out_dir``.

    ``conf`` is a preset name (``configs/synthetic/<name>.yaml``), a YAML path or a dict of overrides.
    ``split`` is ``train``, ``test`` or ``both``. The same (conf, seed) gives identical files.
    """
    if split not in (*SPLITS, "both"):
        raise ValueError(f"split must be one of train, test, both; got {split!r}")
    conf = load_conf(conf)
    out_dir = Path(out_dir)
    splits = SPLITS if split == "both" else (split,)
    existing = [out_dir / s for s in splits if (out_dir / s).exists() and any((out_dir / s).iterdir())]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already holds data; choose another --out or pass overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in splits:
        if (out_dir / s).exists():
            for old in (out_dir / s).glob("*/img_*.png"):  # overwrite: stale images from a bigger run
                old.unlink()
        res = generate_split(out_dir, s, conf, seed, progress, workers)
        if s == "train":
            write_poses(res["records"], out_dir / "train_labels.csv")
            write_thresholds(res["thresholds"], out_dir / "train_thresholds.csv")
        else:
            write_poses(res["records"], out_dir / "test_labels.csv")
            write_thresholds(res["thresholds"], out_dir / "test_thresholds.csv")
            by_ds: Dict[str, List[str]] = {}
            for r in res["records"]:
                by_ds.setdefault(r.dataset, []).append(r.image)
            write_poses([r for ds, ims in by_ds.items() for r in nan_records(ds, ims)], out_dir / "sample_submission.csv")
        _write_intrinsics(res["intrinsics"], out_dir / f"{s}_intrinsics.csv")
        n_out = sum(r.scene == OUTLIER_SCENE for r in res["records"])
        log.info("%s: %d datasets, %d images (%d outliers) in %s", s, len(res["thresholds"]), len(res["records"]), n_out, out_dir / s)
    meta = dict(generator="memposer.data.synthetic", seed=int(seed), splits=list(splits), conf=conf)
    (out_dir / "synthetic.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return out_dir
