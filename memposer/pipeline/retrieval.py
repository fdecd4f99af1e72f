"""Stage 2: one global descriptor per image, for pair shortlisting and clustering.

``method: dinov2`` pools DINOv2 tokens (class token + GeM of patch tokens) from a backbone whose
weights the user names (``weights:``; see ``memposer.models.backbone`` for the formats). Without
weights a random DINOv2 is useless for retrieval, so the stage says so once and falls back to
``method: vlad``: VLAD over the local features already extracted (a per-dataset k-means codebook),
which needs no download and works on a fresh machine.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from memposer.pipeline import images as images_mod
from memposer.pipeline.features import FeatureCache, pick_device

log = logging.getLogger(__name__)

default_conf = {
    "method": "dinov2",  # dinov2 | vlad
    "backbone": "vit_small_patch14_dinov2",
    "weights": None,  # DINOv2 weights file/folder; None -> vlad fallback
    "resize": 448,  # DINOv2 input side (multiple of 14)
    "vlad_words": 32,
    "vlad_sample": 200,  # descriptors per image sampled for the codebook
    "kmeans_iters": 15,
    "seed": 0,
    "device": "auto",
}


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Spherical k-means (cosine), deterministic by seed; returns (k, D) unit centres."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        assign = np.argmax(x @ centres.T, 1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        empty = np.linalg.norm(sums, axis=1) < 1e-9
        sums[empty] = x[rng.choice(len(x), int(empty.sum()))]  # re-seed dead words
        centres = _l2(sums)
    return centres


def vlad(desc: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """VLAD: residuals to the nearest word summed per word, intra- and power-normalised."""
    assign = np.argmax(desc @ centres.T, 1)
    v = np.zeros_like(centres)
    np.add.at(v, assign, desc - centres[assign])
    v = _l2(v)  # intra-normalisation: no single bursty word dominates
    v = v.reshape(-1)
    v = np.sign(v) * np.sqrt(np.abs(v))
    return _l2(v)


def vlad_descriptors(names: List[str], feature_path: Path, conf: dict) -> np.ndarray:
    rng = np.random.default_rng(conf["seed"])
    with FeatureCache(feature_path, capacity=0) as cache:
        sample = []
        for n in names:
            d = cache[n]["descriptors"].astype(np.float32)
            sample.append(d[rng.choice(len(d), min(len(d), conf["vlad_sample"]), replace=False)])
        centres = kmeans(_l2(np.concatenate(sample)), conf["vlad_words"], conf["kmeans_iters"], conf["seed"])
        out = [vlad(_l2(cache[n]["descriptors"].astype(np.float32)), centres) for n in names]
    return np.stack(out).astype(np.float32)


class DinoDescriptors:
    """DINOv2 descriptors by image name, computed from decoded images as they come.

    The features stage hands every image it decodes to :meth:`add` (``extract_features(...,
    on_decoded=...)``), so an image is decoded once per run for both stages; :meth:`describe`
    decodes only the images it was not given (e.g. features cached by an earlier run).
    """

    def __init__(self, conf: dict, progress: bool = True):
        self.conf, self.progress = conf, progress
        self.side = int(conf["resize"]) // 14 * 14
        self.model: Optional[torch.nn.Module] = None
        self.device = pick_device(conf["device"])
        self.desc: Dict[str, np.ndarray] = {}
        self.seconds = 0.0  # spent describing, wherever called from (the run's timing table)

    def add(self, dec: images_mod.DecodedImage) -> None:
        """Describe one decoded image (full resolution, resampled to the network's side)."""
        t0 = time.perf_counter()
        self._add(dec)
        self.seconds += time.perf_counter() - t0

    @torch.no_grad()
    def _add(self, dec: images_mod.DecodedImage) -> None:
        img = images_mod.prepare_image(dec, {"resize_max": None})
        if img is None:
            return
        if self.model is None:
            from memposer.models.backbone import build_backbone  # noqa: PLC0415 (timm import is slow)
            self.model = build_backbone(self.conf["backbone"], self.conf["weights"]).eval().to(self.device)
        x = images_mod.to_tensor(img).to(self.device)
        x = torch.nn.functional.interpolate(x, size=(self.side, self.side), mode="bilinear", antialias=True,
                                            align_corners=False)
        tok = self.model(x)
        gem = tok["patch"].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
        self.desc[img.name] = torch.cat([_t_l2(tok["cls"]), _t_l2(gem)], -1)[0].float().cpu().numpy()

    def describe(self, image_dir: Path, names: List[str]) -> np.ndarray:
        """(N, D) unit descriptors of ``names``, decoding the images :meth:`add` was not given."""
        todo = [n for n in names if n not in self.desc]
        for name in tqdm(todo, desc="global descriptors", disable=not self.progress or not todo, leave=False):
            dec = images_mod.decode_image(image_dir / name)
            if dec is not None:
                self.add(dec)
        missing = [n for n in names if n not in self.desc]
        if missing:
            raise ValueError(f"retrieval: {len(missing)} image(s) could not be read again, e.g. {missing[0]}")
        return _l2(np.stack([self.desc[n] for n in names])).astype(np.float32)


def pixel_descriptors(conf: Optional[dict] = None, progress: bool = True) -> Optional[DinoDescriptors]:
    """The describer that needs the images' pixels (DINOv2 with weights), or None (VLAD needs none)."""
    conf = {**default_conf, **(conf or {})}
    return DinoDescriptors(conf, progress) if conf["method"] == "dinov2" and conf["weights"] else None


def _t_l2(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def global_descriptors(image_dir: Path | str, names: List[str], feature_path: Path | str,
                       conf: Optional[dict] = None, progress: bool = True,
                       describer: Optional[DinoDescriptors] = None) -> np.ndarray:
    """(N, D) unit descriptors of ``names`` (all must have features in ``feature_path``);
    ``describer``: the :func:`pixel_descriptors` the features stage already fed, if any."""
    conf = {**default_conf, **(conf or {})}
    if not names:
        return np.zeros((0, 1), np.float32)
    method = conf["method"]
    if method == "dinov2" and not conf["weights"]:
        _warn_no_weights()
        method = "vlad"
    if method == "dinov2":
        return (describer or DinoDescriptors(conf, progress)).describe(Path(image_dir), names)
    if method == "vlad":
        return vlad_descriptors(names, Path(feature_path), conf)
    raise ValueError(f"unknown retrieval method {method!r} (dinov2|vlad)")


_warned = False


def _warn_no_weights() -> None:
    global _warned
    if not _warned:
        log.warning("retrieval: no DINOv2 weights given (--dinov2 PATH or retrieval.weights); "
                    "using VLAD over local features instead")
        _warned = True
