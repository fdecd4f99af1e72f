"""Pair scores before LightGlue: mutual nearest neighbours of local descriptors that pass a ratio test.

A (M, N) descriptor product per pair costs ~2-15 ms on 2 CPU cores, against 150-450 ms for LightGlue
on the same pair, so the pairs stage can afford it on every retrieval candidate
(``pairs.rerank: mutual``). Pairs that see one scene share many distinctive descriptors; look-alike
scenes and outliers share few (docs/results.md, "Pairs re-ranked by mutual matches").
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch

from memposer.pipeline.features import FeatureCache, pick_device, torch_threads


def _unit(d: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.from_numpy(d.astype(np.float32)).to(device), dim=-1)


@torch.inference_mode()
def mutual_matches(d0: torch.Tensor, d1: torch.Tensor, ratio: float) -> int:
    """How many rows of ``d0`` (M, D) and ``d1`` (N, D) (unit vectors) are each other's nearest
    neighbour with distance < ``ratio`` x the row's second-nearest distance."""
    if len(d0) < 2 or len(d1) < 2:
        return 0
    sim = d0 @ d1.T
    top = sim.topk(2, dim=1)
    dist = (2 - 2 * top.values).clamp(min=0).sqrt()
    back = sim.argmax(dim=0)
    mutual = back[top.indices[:, 0]] == torch.arange(len(d0), device=d0.device)
    return int((mutual & (dist[:, 0] < ratio * dist[:, 1])).sum())


def mutual_match_counts(pairs: Sequence[Tuple[str, str]], feature_path: Path | str, ratio: float = 0.9,
                        device: str = "auto", capacity: int = 256) -> np.ndarray:
    """(P,) :func:`mutual_matches` of every pair of image names, from the features cache (the unit
    descriptors of the last ``capacity`` images are kept: pairs come sorted, so most are reused)."""
    dev = pick_device(device)
    out = np.zeros(len(pairs), np.int64)
    units: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def unit(name: str) -> torch.Tensor:
        if name not in units:
            units[name] = _unit(cache[name]["descriptors"], dev)
            if len(units) > capacity:
                units.popitem(last=False)
        units.move_to_end(name)
        return units[name]

    # one torch thread: each product is too small to split, and split it slows down badly on a busy machine
    with FeatureCache(feature_path, capacity=0) as cache, torch_threads(1):
        for p, (a, b) in enumerate(pairs):
            out[p] = mutual_matches(unit(a), unit(b), ratio)
    return out


def pair_scorer(names: Sequence[str], feature_path: Path | str, conf: dict,
                device: str = "auto") -> Callable[[List[Tuple[int, int]]], np.ndarray]:
    """``pairs.shortlist_pairs``'s pair score: index pairs into ``names`` -> mutual match counts
    (``conf``: the pairs section; its ``rerank_ratio`` is the ratio test)."""
    return lambda idx: mutual_match_counts([(names[i], names[j]) for i, j in idx], feature_path,
                                           float(conf["rerank_ratio"]), device)
