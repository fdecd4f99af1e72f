"""Stage 2: one global descriptor per image, for pair shortlisting and clustering.

``method: dinov2`` pools DINOv2 tokens (class token + GeM of patch tokens) from a backbone whose
weights the user names (``weights:``; see ``memposer.models.backbone`` for the formats). Without
weights a random DINOv2 is useless for retrieval, so the stage says so once and falls back to
``method: vlad``: VLAD over the local features already extracted (a per-dataset k-means codebook),
which needs no download and works on a fresh machine.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

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


@torch.no_grad()
def dinov2_descriptors(image_dir: Path, names: List[str], conf: dict, progress: bool = True) -> np.ndarray:
    from memposer.models.backbone import build_backbone  # noqa: PLC0415 (timm import is slow)

    device = pick_device(conf["device"])
    model = build_backbone(conf["backbone"], conf["weights"]).eval().to(device)
    side = int(conf["resize"]) // 14 * 14
    out = []
    for name in tqdm(names, desc="global descriptors", disable=not progress, leave=False):
        img = images_mod.load_image(image_dir / name, {"resize_max": None})
        x = images_mod.to_tensor(img).to(device)
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        tok = model(x)
        gem = tok["patch"].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
        out.append(torch.cat([_t_l2(tok["cls"]), _t_l2(gem)], -1)[0].float().cpu().numpy())
    return _l2(np.stack(out)).astype(np.float32)


def _t_l2(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def global_descriptors(image_dir: Path | str, names: List[str], feature_path: Path | str,
                       conf: Optional[dict] = None, progress: bool = True) -> np.ndarray:
    """(N, D) unit descriptors of ``names`` (all must have features in ``feature_path``)."""
    conf = {**default_conf, **(conf or {})}
    if not names:
        return np.zeros((0, 1), np.float32)
    method = conf["method"]
    if method == "dinov2" and not conf["weights"]:
        _warn_no_weights()
        method = "vlad"
    if method == "dinov2":
        return dinov2_descriptors(Path(image_dir), names, conf, progress)
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


main = global_descriptors
