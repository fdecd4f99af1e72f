"""Scene sampling for MemPoser training over any IMC2025-layout folder.

``<root>/train_labels.csv`` (+ optional ``train_thresholds.csv``) and images under
``<root>/train/<dataset>/<image>``; ``root`` may list several such folders (e.g. synthetic sets
generated in parallel), whose dataset names then get the folder's name as a prefix. A sample is one scene with K frames (K varies between
``frames[0]`` and ``frames[1]``); outlier images and images without a pose are left out. The
train/val split is by scene. Training samples get photometric augmentation only (geometric
augmentation would change the cameras), in the loader workers (``augment_on: loader``) or, batched,
on the training device after the transfer (``augment_on: device``: uint8 batches, no CPU bottleneck).
"""
from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from memposer.data.imc import OUTLIER_SCENE, read_labels, read_thresholds
from memposer.models.mempose import load_rgb

log = logging.getLogger(__name__)

default_conf: Dict[str, Any] = {
    "root": None,                 # IMC2025-layout folder, or a list of them
    "labels": None,               # default <root>/train_labels.csv
    "thresholds": None,           # default <root>/train_thresholds.csv (optional, for mAA)
    "image_dir": None,            # default <root>/train
    "image_size": [224, 224],     # (H, W) every frame is resized to
    "frames": [4, 16],            # min / max frames per sample
    "batch_size": 4,              # scenes per batch
    "num_workers": 2,
    "val_fraction": 0.2,          # share of scenes held out (by scene)
    "val_scenes": None,           # or an explicit list of "dataset/scene"
    "split_seed": 0,
    "samples_per_epoch": 512,     # training samples (scenes drawn with replacement) per epoch
    "val_samples_per_scene": 2,
    "val_frames": None,           # frames per val sample (default frames[1])
    "sequence_scenes": [],        # "dataset/scene" whose images, sorted by name, form a sequence
    "preload": False,             # decode + resize every image once, up front
    "preload_threads": 8,
    "augment_on": "loader",       # loader (per image, in workers) | device (batched, after the transfer)
    "augment": {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.03, "gamma": 0.25, "noise": 0.02},
}


@dataclass
class Scene:
    dataset: str
    scene: str
    paths: List[Path]
    images: List[str]
    R: np.ndarray  # (n, 3, 3) world-to-camera
    t: np.ndarray  # (n, 3)
    sequence: bool = False

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.scene}"

    def __len__(self) -> int:
        return len(self.paths)


def index_scenes(labels: Path | str, image_dir: Path | str, sequence_scenes: Sequence[str] = (),
                 prefix: str = "") -> List[Scene]:
    """Group labelled images into scenes; outliers, pose-less rows and missing files are skipped.

    ``prefix`` is put in front of every dataset name (keeps several roots apart).
    """
    image_dir = Path(image_dir)
    groups: Dict[tuple, list] = {}
    missing = 0
    for r in read_labels(labels):
        if r.scene == OUTLIER_SCENE or not r.has_pose:
            continue
        path = image_dir / r.dataset / r.image
        if not path.is_file():
            missing += 1
            continue
        groups.setdefault((prefix + r.dataset, r.scene), []).append((r.image, path, r.R, r.t))
    if missing:
        log.warning("%d labelled images are missing under %s and were skipped", missing, image_dir)
    scenes = []
    for (ds, sc), rows in sorted(groups.items()):
        if len(rows) < 2:
            log.warning("scene %s/%s has %d image(s) with a pose: skipped", ds, sc, len(rows))
            continue
        rows.sort(key=lambda x: x[0])
        scenes.append(Scene(ds, sc, [r[1] for r in rows], [r[0] for r in rows],
                            np.stack([r[2] for r in rows]).astype(np.float32),
                            np.stack([r[3] for r in rows]).astype(np.float32),
                            sequence=f"{ds}/{sc}" in set(sequence_scenes)))
    return scenes


def split_scenes(scenes: List[Scene], val_fraction: float, val_scenes: Optional[Sequence[str]] = None,
                 seed: int = 0) -> tuple:
    """(train, val) by scene: the named ``val_scenes``, else a seeded random ``val_fraction``."""
    if val_scenes is not None:
        names = set(val_scenes)
        unknown = names - {s.name for s in scenes}
        if unknown:
            raise ValueError(f"val_scenes not found in the labels: {sorted(unknown)}")
        return [s for s in scenes if s.name not in names], [s for s in scenes if s.name in names]
    order = np.random.default_rng(seed).permutation(len(scenes))
    n_val = min(len(scenes) - 1, math.ceil(val_fraction * len(scenes))) if val_fraction > 0 else 0
    val_idx = set(order[:n_val].tolist())
    return ([s for i, s in enumerate(scenes) if i not in val_idx], [s for i, s in enumerate(scenes) if i in val_idx])


def load_image(path: Path, size: Sequence[int]) -> torch.Tensor:
    """RGB image resized to (H, W), uint8 (3, H, W): the resize MemPoser's inference uses too."""
    return load_rgb(path, size)


def photometric(img: torch.Tensor, rng: np.random.Generator, conf: Dict[str, float]) -> torch.Tensor:
    """Brightness / contrast / saturation / hue-ish channel gains / gamma / noise on a (3,H,W) image in [0,1]."""
    def u(r):
        return 1.0 + rng.uniform(-r, r)
    img = img * u(conf.get("brightness", 0))
    mean = img.mean()
    img = (img - mean) * u(conf.get("contrast", 0)) + mean
    gray = img.mean(0, keepdim=True)
    img = (img - gray) * u(conf.get("saturation", 0)) + gray
    if conf.get("hue", 0):
        img = img * torch.tensor([u(conf["hue"]) for _ in range(3)], dtype=img.dtype)[:, None, None]
    img = img.clamp(0, 1) ** u(conf.get("gamma", 0))
    if conf.get("noise", 0):
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
        img = img + torch.randn(img.shape, generator=g) * rng.uniform(0, conf["noise"])
    return img.clamp(0, 1)


def photometric_batch(images: torch.Tensor, conf: Dict[str, float],
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """:func:`photometric` for a whole batch (..., 3, H, W) in [0,1], one draw per image, on its device."""
    lead = images.shape[:-3]
    dev = images.device

    def u(r, channels=1):
        x = torch.rand(*lead, channels, 1, 1, generator=generator, device=dev)
        return 1.0 + (2 * x - 1) * r
    img = images * u(conf.get("brightness", 0))
    mean = img.mean((-3, -2, -1), keepdim=True)
    img = (img - mean) * u(conf.get("contrast", 0)) + mean
    gray = img.mean(-3, keepdim=True)
    img = (img - gray) * u(conf.get("saturation", 0)) + gray
    if conf.get("hue", 0):
        img = img * u(conf["hue"], 3)
    img = img.clamp(0, 1) ** u(conf.get("gamma", 0))
    if conf.get("noise", 0):
        sigma = torch.rand(*lead, 1, 1, 1, generator=generator, device=dev) * conf["noise"]
        img = img + torch.randn(images.shape, generator=generator, device=dev) * sigma
    return img.clamp(0, 1)


class SceneSamples(Dataset):
    """Training (random K, random frames, augmented) or validation (fixed, unaugmented) scene samples."""

    def __init__(self, scenes: List[Scene], conf: Dict[str, Any], train: bool, cache: Optional[dict] = None):
        if not scenes:
            raise ValueError("no scenes to sample from")
        self.scenes, self.conf, self.train, self.cache = scenes, conf, train, cache or {}
        if not train:
            rng = np.random.default_rng(conf["split_seed"] + 1)
            k = conf["val_frames"] or conf["frames"][1]
            self.fixed = []
            for si, s in enumerate(scenes):
                for _ in range(conf["val_samples_per_scene"]):
                    self.fixed.append((si, self._frames(s, min(k, len(s)), rng)))

    def __len__(self) -> int:
        return self.conf["samples_per_epoch"] if self.train else len(self.fixed)

    @staticmethod
    def _frames(scene: Scene, k: int, rng: np.random.Generator) -> np.ndarray:
        if scene.sequence:  # a contiguous window keeps the capture order
            start = int(rng.integers(0, len(scene) - k + 1))
            return np.arange(start, start + k)
        return np.sort(rng.choice(len(scene), size=k, replace=False))

    def _image(self, path: Path) -> torch.Tensor:
        img = self.cache.get(path)
        return img if img is not None else load_image(path, self.conf["image_size"])

    def __getitem__(self, i: int) -> Dict[str, Any]:
        if self.train:
            # torch seeds each worker per epoch: reproducible under pl.seed_everything(workers=True)
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,)).item()))
            si = int(rng.integers(len(self.scenes)))
            s = self.scenes[si]
            lo, hi = self.conf["frames"]
            k = int(rng.integers(min(lo, len(s)), min(hi, len(s)) + 1))
            idx = self._frames(s, k, rng)
        else:
            si, idx = self.fixed[i]
            s = self.scenes[si]
        imgs = torch.stack([self._image(s.paths[j]) for j in idx])
        if self.conf["augment_on"] != "device":  # else uint8 goes to the device, see on_after_batch_transfer
            imgs = imgs.float() / 255
            if self.train:
                imgs = torch.stack([photometric(im, rng, self.conf["augment"]) for im in imgs])
        return {"images": imgs, "R": torch.from_numpy(s.R[idx]), "t": torch.from_numpy(s.t[idx]),
                "scene": s.name, "names": [s.images[j] for j in idx], "is_sequence": s.sequence}


def collate_scenes(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Pad scenes to the largest K; ``mask`` (B, K) marks real frames."""
    B, K = len(items), max(len(it["images"]) for it in items)
    H, W = items[0]["images"].shape[-2:]
    out = {"images": torch.zeros(B, K, 3, H, W, dtype=items[0]["images"].dtype), "R": torch.eye(3).repeat(B, K, 1, 1), "t": torch.zeros(B, K, 3),
           "mask": torch.zeros(B, K, dtype=torch.bool), "scene": [it["scene"] for it in items],
           "names": [it["names"] for it in items],
           "is_sequence": torch.tensor([bool(it["is_sequence"]) for it in items])}
    for b, it in enumerate(items):
        k = len(it["images"])
        out["images"][b, :k], out["R"][b, :k], out["t"][b, :k] = it["images"], it["R"], it["t"]
        out["mask"][b, :k] = True
    return out


class SceneDataModule(pl.LightningDataModule):
    """Train / val scene samples of one IMC2025-layout folder, split by scene."""

    def __init__(self, conf: Optional[Dict[str, Any]] = None, **overrides):
        super().__init__()
        conf = {**default_conf, **(conf or {}), **overrides}
        conf["augment"] = {**default_conf["augment"], **(conf.get("augment") or {})}
        if conf["augment_on"] not in ("loader", "device"):
            raise ValueError(f"data.augment_on must be loader or device, got {conf['augment_on']!r}")
        if not conf["root"]:
            raise ValueError("data.root is not set: give the IMC2025-layout folder holding train_labels.csv")
        roots = [Path(r) for r in (conf["root"] if isinstance(conf["root"], (list, tuple)) else [conf["root"]])]
        if len(roots) > 1 and any(conf[k] for k in ("labels", "thresholds", "image_dir")):
            raise ValueError("data.labels / thresholds / image_dir need a single data.root")
        if len({r.name for r in roots}) != len(roots):
            raise ValueError(f"data.root folders need distinct names (they prefix dataset names): {roots}")
        # (labels, image dir, dataset-name prefix) per root
        self.sources = []
        self.thresholds: Dict[str, Dict[str, List[float]]] = {}
        for root in roots:
            prefix = f"{root.name}-" if len(roots) > 1 else ""
            labels = Path(conf["labels"] or root / "train_labels.csv")
            if not labels.is_file():
                raise FileNotFoundError(f"labels file not found: {labels}")
            thr = Path(conf["thresholds"] or root / "train_thresholds.csv")
            if thr.is_file():
                self.thresholds.update({prefix + ds: v for ds, v in read_thresholds(thr).items()})
            self.sources.append((labels, Path(conf["image_dir"] or root / "train"), prefix))
        self.labels_path = self.sources[0][0]
        self.image_dir = self.sources[0][1]
        self.conf = conf
        self.train_scenes: List[Scene] = []
        self.val_scenes: List[Scene] = []
        self.cache: dict = {}

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_scenes:
            return
        scenes = [s for labels, image_dir, prefix in self.sources
                  for s in index_scenes(labels, image_dir, self.conf["sequence_scenes"], prefix)]
        if len(scenes) < 1:
            raise ValueError(f"no scene with >= 2 posed images in {[str(s[0]) for s in self.sources]}")
        self.train_scenes, self.val_scenes = split_scenes(scenes, self.conf["val_fraction"],
                                                          self.conf["val_scenes"], self.conf["split_seed"])
        log.info("scenes: %d train (%d images), %d val (%d images)", len(self.train_scenes),
                 sum(map(len, self.train_scenes)), len(self.val_scenes), sum(map(len, self.val_scenes)))
        if self.conf["preload"]:
            paths = [p for s in scenes for p in s.paths]
            size = self.conf["image_size"]
            # PIL decodes outside the GIL: threads give a near-linear speed-up
            with ThreadPoolExecutor(max(1, int(self.conf["preload_threads"]))) as pool:
                imgs = list(tqdm(pool.map(lambda p: load_image(p, size), paths), total=len(paths),
                                 desc="preloading images", mininterval=2))
            self.cache = dict(zip(paths, imgs))

    def on_after_batch_transfer(self, batch: Dict[str, Any], dataloader_idx: int) -> Dict[str, Any]:
        if batch["images"].dtype == torch.uint8:  # augment_on: device
            images = batch["images"].float() / 255
            trainer = getattr(self, "trainer", None)
            if trainer is not None and trainer.training:
                images = photometric_batch(images, self.conf["augment"])
            batch["images"] = images
        return batch

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        nw = self.conf["num_workers"]
        return DataLoader(ds, batch_size=self.conf["batch_size"], shuffle=shuffle, num_workers=nw,
                          collate_fn=collate_scenes, pin_memory=torch.cuda.is_available(),
                          persistent_workers=nw > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(SceneSamples(self.train_scenes, self.conf, True, self.cache), shuffle=False)

    def val_dataloader(self) -> DataLoader:
        if not self.val_scenes:
            return []
        return self._loader(SceneSamples(self.val_scenes, self.conf, False, self.cache), shuffle=False)
