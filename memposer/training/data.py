"""Training data for MemPoser: synthetic track scenes generated on the fly, never the same twice.

Training batches come from seeds ``(seed, epoch, rank, worker, i)``; validation batches from a
separate, fixed key, so the validation scenes are never trained on and are the same every epoch
and on every machine. Each item of the loaders is a whole collated batch
(:func:`memposer.data.tracks.sample_batch`).
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from memposer.config import merge_strict

from memposer.data.tracks import collate_track_scenes, default_conf as scene_defaults, sample_scene
from memposer.geometry import camera_center

VAL_KEY = 7_000_001  # the validation (held-out) scenes' seed key; training never uses it

default_conf: Dict[str, Any] = {
    "scenes": {},              # memposer.data.tracks.default_conf overrides
    "batch_size": 32,          # scenes per step (per GPU)
    "steps_per_epoch": 500,
    "num_workers": 4,
    "val_batches": 8,
    "val_batch_size": 32,
    "val_scenes": {},          # overrides for the validation scenes (default: as training)
    # Training batches whose refinement starts from perturbed true poses instead of the decoder's,
    # so the refiner also learns to improve poses from elsewhere (rotation averaging on real scenes):
    # share of batches, per-scene max rotation noise (degrees, per camera uniform below it) and
    # centre noise (times the RMS camera distance to the centroid).
    "init_poses": {"p": 0.0, "rot_deg": [2.0, 30.0], "center": [0.0, 0.5]},
}


def scene_conf(overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    unknown = set(overrides or {}) - set(scene_defaults)
    if unknown:
        raise KeyError(f"unknown data.scenes option(s) {sorted(unknown)}; known: {sorted(scene_defaults)}")
    return {**scene_defaults, **(overrides or {})}


def batch_from_key(key, batch_size: int, conf: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    rng = np.random.default_rng(np.random.SeedSequence(key))
    return collate_track_scenes([sample_scene(rng, conf) for _ in range(batch_size)])


def perturbed_poses(rng: np.random.Generator, R: torch.Tensor, t: torch.Tensor,
                    conf: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor]:
    """True poses (B,N,3,3), (B,N,3) world-to-camera -> perturbed rotations and centres (B,N,3)."""
    B, N = R.shape[:2]
    axis = rng.normal(size=(B, N, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    angle = np.deg2rad(rng.uniform(*conf["rot_deg"], size=(B, 1)) * rng.uniform(0, 1, (B, N)))
    dR = Rotation.from_rotvec((axis * angle[..., None]).reshape(-1, 3)).as_matrix().reshape(B, N, 3, 3)
    c = camera_center(R.double(), t.double()).numpy()
    rms = np.sqrt(((c - c.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))[:, None, None]
    c = c + rng.normal(size=c.shape) * rms * rng.uniform(*conf["center"], size=(B, 1, 1))
    return torch.from_numpy(dR).float() @ R, torch.from_numpy(c).float()


class TrainBatches(IterableDataset):
    """``steps`` batches per epoch per rank, split over the loader's workers."""

    def __init__(self, conf: Dict[str, Any], seed: int, rank: int = 0):
        self.conf, self.seed, self.rank, self.epoch = conf, seed, rank, 0
        self.scenes = scene_conf(conf["scenes"])
        self.init = merge_strict(default_conf["init_poses"], conf["init_poses"], "data.init_poses.")

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for i in range(wid, self.conf["steps_per_epoch"], nw):
            key = [self.seed, self.epoch, self.rank, i]
            batch = batch_from_key(key, self.conf["batch_size"], self.scenes)
            if self.init["p"] > 0:
                rng = np.random.default_rng(np.random.SeedSequence(key + [1]))  # not the scenes' stream
                if rng.random() < self.init["p"]:
                    batch["init_R"], batch["init_center"] = perturbed_poses(rng, batch["R"], batch["t"], self.init)
            yield batch

    def __len__(self) -> int:
        return self.conf["steps_per_epoch"]


class ValBatches(Dataset):
    def __init__(self, conf: Dict[str, Any]):
        self.conf = conf
        self.scenes = scene_conf({**conf["scenes"], **conf["val_scenes"]})

    def __len__(self) -> int:
        return self.conf["val_batches"]

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return batch_from_key([VAL_KEY, i], self.conf["val_batch_size"], self.scenes)


class TrackDataModule(pl.LightningDataModule):
    def __init__(self, conf: Optional[Dict[str, Any]] = None, seed: int = 0):
        super().__init__()
        unknown = set(conf or {}) - set(default_conf)
        if unknown:
            raise KeyError(f"unknown data option(s) {sorted(unknown)}; known: {sorted(default_conf)}")
        self.conf = {**default_conf, **(conf or {})}
        self.seed = seed
        self._train: Optional[TrainBatches] = None

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self._train = TrainBatches(self.conf, self.seed, rank)
        if self.trainer is not None:
            self._train.epoch = self.trainer.current_epoch
        return self._loader(self._train)

    def val_dataloader(self) -> DataLoader:
        return self._loader(ValBatches(self.conf))

    def _loader(self, ds) -> DataLoader:
        nw = int(self.conf["num_workers"])
        return DataLoader(ds, batch_size=None, num_workers=nw, persistent_workers=False,
                          pin_memory=torch.cuda.is_available(), prefetch_factor=4 if nw else None)
