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


def render_dataset(out_dir: Path, split: str, sconf: dict, seed: int, d: int, plan: dict, bar=None) -> dict:
    """Render and save dataset ``d`` of a split; its records, thresholds and intrinsics rows."""
    split_id = SPLITS.index(split)
    dataset = f"{plan['family']}_{plan['style']}_{d:02d}"
    records: List[PoseRecord] = []
    thresholds: Dict[str, List[float]] = {}
    intr: List[list] = []
    views = []  # (scene name, image, K, R or None, t or None)
    for k, spec in enumerate(plan["scenes"]):
        res = render_scene(spec, _rng(seed, split_id, d, k), sconf)
        name = f"{spec['family']}_{spec['style']}_{chr(ord('a') + k)}"
        thresholds[name] = res["thresholds"]
        views += [(name, im, K, R, t) for im, K, R, t in zip(res["images"], res["K"], res["R"], res["t"])]
        if bar is not None:
            bar.update(len(res["images"]))
    for j, spec in enumerate(plan["outliers"]):
        res = render_scene(spec, _rng(seed, split_id, d, 1000 + j), sconf)
        views.append((OUTLIER_SCENE, res["images"][0], res["K"][0], None, None))
        if bar is not None:
            bar.update(1)
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

    ``workers`` > 1 renders datasets in parallel processes; the files are the same either way.
    """
    split_id = SPLITS.index(split)
    sconf = load_conf({**{k: v for k, v in conf.items() if k != "test"}, **(conf.get("test") or {})}) if split == "test" else conf
    plans = [plan_dataset(sconf, _rng(seed, split_id, d)) for d in range(int(sconf["datasets"]))]
    total = sum(s["n_images"] for p in plans for s in p["scenes"] + p["outliers"])
    with tqdm(total=total, desc=f"synthetic {split}", unit="img", disable=not progress) as bar:
        if workers > 1 and len(plans) > 1:
            with ProcessPoolExecutor(min(workers, len(plans))) as pool:
                jobs = [pool.submit(render_dataset, out_dir, split, sconf, seed, d, p) for d, p in enumerate(plans)]
                parts = []
                for job, p in zip(jobs, plans):
                    parts.append(job.result())
                    bar.update(sum(s["n_images"] for s in p["scenes"] + p["outliers"]))
        else:
            parts = [render_dataset(out_dir, split, sconf, seed, d, p, bar) for d, p in enumerate(plans)]
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
