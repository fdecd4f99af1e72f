"""Stage 5: LightGlue on the shortlisted pairs, streamed to an HDF5 cache.

Cache layout: dataset ``/<name0>/<name1>`` = (M, 2) int32 keypoint indices, written once per pair;
a resumed run skips pairs already present. On a GPU, pairs whose keypoint counts agree are matched
in batches; batches run LightGlue at full depth and width, because its adaptive early stopping and
point pruning decide once for the whole batch (pruning a batch >1 even mixes keypoints across pairs).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch
from tqdm import tqdm

from memposer.pipeline.features import FeatureCache, extractor_of, lightglue_module, open_cache, pick_device
from memposer.pipeline.upright import canonical_keypoints

log = logging.getLogger(__name__)

default_conf = {
    "depth_confidence": 0.95,
    "width_confidence": 0.99,
    "filter_threshold": 0.1,
    "batch_size": "auto",  # pairs per forward pass: auto = 16 on GPU, 1 on CPU; >1 turns adaptivity off
    "mixed_precision": True,  # fp16 autocast on GPU
    "device": "auto",
}


def build_matcher(conf: dict, device: torch.device, batch_size: int = 1, features: str = "aliked") -> torch.nn.Module:
    """LightGlue (weights for ``features``: aliked | disk | sift) for ``conf``; with ``batch_size`` > 1
    adaptive depth and width are switched off."""
    lg = lightglue_module()
    adaptive = batch_size == 1
    m = lg.LightGlue(features=features, depth_confidence=conf["depth_confidence"] if adaptive else -1,
                     width_confidence=conf["width_confidence"] if adaptive else -1,
                     filter_threshold=conf["filter_threshold"],
                     mp=bool(conf["mixed_precision"] and device.type == "cuda"))
    return m.eval().to(device)


def pair_key(name0: str, name1: str) -> str:
    return f"{name0}/{name1}"


def _batches(pairs: Sequence[Tuple[str, str]], cache: FeatureCache, size: int) -> Iterator[List[Tuple[str, str]]]:
    """Consecutive runs of pairs whose keypoint counts agree (LightGlue batches need equal shapes)."""
    batch, shape = [], None
    for a, b in pairs:
        s = (len(cache[a]["keypoints"]), len(cache[b]["keypoints"]))
        if batch and (s != shape or len(batch) == size):
            yield batch
            batch = []
        batch, shape = batch + [(a, b)], s
    if batch:
        yield batch


def _stack(feats: List[dict], device: torch.device) -> dict:
    # LightGlue sees keypoints in the frame their descriptors come from (an image's turn, upright.py);
    # the match indices it returns are the same in every frame
    canon = [canonical_keypoints(f) for f in feats]
    out = {
        "keypoints": torch.from_numpy(np.stack([k for k, _ in canon])).float(),
        "descriptors": torch.from_numpy(np.stack([f["descriptors"] for f in feats]).astype(np.float32)),
        "image_size": torch.from_numpy(np.stack([s for _, s in canon])).float(),
    }
    for k in ("scales", "oris"):
        if k in feats[0]:
            out[k] = torch.from_numpy(np.stack([f[k] for f in feats])).float()
    return {k: v.to(device) for k, v in out.items()}


def batch_size(conf: dict, device: torch.device) -> int:
    """Pairs per LightGlue forward pass: ``auto`` = 16 on a GPU, 1 (adaptive depth/width) on the CPU."""
    return (16 if device.type == "cuda" else 1) if conf["batch_size"] == "auto" else int(conf["batch_size"])


def match_pairs(pairs: Sequence[Tuple[str, str]], feature_path: Path | str, match_path: Path | str,
                conf: Optional[dict] = None, progress: bool = True) -> int:
    """Match ``pairs`` of image names into ``match_path``; returns how many were computed (not cached)."""
    conf = {**default_conf, **(conf or {})}
    device = pick_device(conf["device"])
    size = batch_size(conf, device)
    with open_cache(Path(match_path)) as out:
        todo = [(a, b) for a, b in pairs if pair_key(a, b) not in out]
        if not todo:
            return 0
        log.info("matching: %d pairs cached, %d to match", len(pairs) - len(todo), len(todo))
        if size > 1:
            log.info("matching in batches of up to %d pairs: LightGlue's adaptive depth/width off", size)
        bar = tqdm(total=len(todo), desc="matching", disable=not progress, leave=False)
        with FeatureCache(feature_path) as cache:
            model = build_matcher(conf, device, size, extractor_of(cache.f))
            for batch in _batches(todo, cache, size):
                data = {"image0": _stack([cache[a] for a, _ in batch], device),
                        "image1": _stack([cache[b] for _, b in batch], device)}
                with torch.inference_mode():
                    pred = model(data)
                for (a, b), m in zip(batch, pred["matches"]):
                    out.create_dataset(pair_key(a, b), data=m.cpu().numpy().astype(np.int32))
                out.flush()
                bar.update(len(batch))
        bar.close()
    return len(todo)


def read_matches(f: h5py.File, name0: str, name1: str) -> np.ndarray:
    """(M, 2) matches of a pair, whichever order it was stored in; empty if never matched."""
    if pair_key(name0, name1) in f:
        return f[pair_key(name0, name1)][()]
    if pair_key(name1, name0) in f:
        return f[pair_key(name1, name0)][()][:, ::-1]
    return np.zeros((0, 2), np.int32)
