"""Stage 3: which image pairs to match.

Below ``exhaustive_below`` images every pair is matched. Above it each image keeps its ``k``
nearest neighbours by global-descriptor similarity, plus up to ``max_k`` neighbours above
``min_similarity``; similarities are computed in row blocks, so memory and pair count stay O(n k).
When a dataset is known to be a video or sequence (``sequence_window``), consecutive frames are
added as pairs too: sequence continuity lives here and in the training loss, never in the decoder.
"""
from __future__ import annotations

from itertools import combinations
from typing import List, Optional, Tuple

import numpy as np

default_conf = {
    "exhaustive_below": 20,  # match every pair when a dataset has fewer images
    "k": 10,
    "min_similarity": None,  # also keep neighbours above this cosine similarity (None: off)
    "max_k": 30,
    "block": 1024,  # rows of the similarity matrix computed at once
    "sequence_window": 0,  # > 0: images are a sequence in name order; also pair each with its next w
}

Pair = Tuple[int, int]


def shortlist_pairs(desc: np.ndarray, conf: Optional[dict] = None) -> List[Pair]:
    """Sorted unique ``(i, j)`` with ``i < j`` to match, from (N, D) unit descriptors."""
    conf = {**default_conf, **(conf or {})}
    n = len(desc)
    if n < 2:
        return []
    if n < conf["exhaustive_below"]:
        return list(combinations(range(n), 2))
    pairs = set(sequence_pairs(n, int(conf["sequence_window"])))
    k = min(int(conf["k"]), n - 1)
    max_k = min(max(int(conf["max_k"]), k), n - 1)
    for start in range(0, n, conf["block"]):
        sim = desc[start:start + conf["block"]] @ desc.T
        rows = np.arange(len(sim))
        sim[rows, rows + start] = -np.inf  # no self pairs
        top = np.argpartition(-sim, max_k - 1, axis=1)[:, :max_k]
        top_sim = np.take_along_axis(sim, top, 1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        top, top_sim = np.take_along_axis(top, order, 1), np.take_along_axis(top_sim, order, 1)
        keep = np.zeros_like(top, dtype=bool)
        keep[:, :k] = True
        if conf["min_similarity"] is not None:
            keep |= top_sim >= conf["min_similarity"]
        for r, c in zip(*np.nonzero(keep)):
            i, j = start + int(r), int(top[r, c])
            pairs.add((min(i, j), max(i, j)))
    return sorted(pairs)


def sequence_pairs(n: int, window: int) -> List[Pair]:
    """Consecutive frames of a sequence (names sorted = time order): ``(i, i+1) ... (i, i+window)``."""
    return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + window + 1))]
