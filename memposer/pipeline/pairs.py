"""Stage 3: which image pairs to match.

Below ``exhaustive_below`` images every pair is matched. Above it each image keeps its ``k``
nearest neighbours by global-descriptor similarity, plus up to ``max_k`` neighbours above
``min_similarity``; similarities are computed in row blocks, so memory and pair count stay O(n k).
When a dataset is known to be a video or sequence (``sequence_window``), consecutive frames are
added as pairs too: sequence continuity lives here and in the training loss, never in the decoder.
With ``rerank: mutual``, each image's ``rerank_candidates`` nearest neighbours are only candidates: it
keeps the ``k`` of them a pair score ranks highest (mutual descriptor matches, ``prematch.py``).
With ``mst``, the edges of the maximum spanning tree of the descriptor similarity graph are added (the
seed notes' idea 3): every image is then linked to the rest by its most similar path, even where
k-nearest-neighbour lists form islands.
"""
from __future__ import annotations

import logging
from itertools import combinations
from typing import Callable, List, Optional, Sequence, Set, Tuple

import numpy as np

log = logging.getLogger(__name__)

default_conf = {
    "exhaustive_below": 20,  # match every pair when a dataset has fewer images
    "k": 10,
    "min_similarity": None,  # also keep neighbours above this cosine similarity (None: off)
    "max_k": 30,
    "block": 1024,  # rows of the similarity matrix computed at once
    "sequence_window": 0,  # > 0: images are a sequence in name order; also pair each with its next w
    # none | mutual: each image keeps the k of its rerank_candidates nearest (by global similarity) that
    # share the most mutual descriptor matches with it (max_k and min_similarity then unused)
    "rerank": "none",
    "rerank_candidates": 30,
    "rerank_ratio": 0.9,  # a descriptor match counts when nearest / second-nearest distance < this
    "rerank_min": 0,  # of an image's k, candidates with fewer mutual matches are dropped (never its best)
    "union_k": 3,  # neighbours each image also gets by retrieval.union's descriptors (when set)
    "mst": False,  # also match the maximum spanning tree of the similarity graph (n^2 memory: n <= mst_max)
    "mst_max": 8000,
}

Pair = Tuple[int, int]
PairScore = Callable[[List[Pair]], np.ndarray]  # pairs -> (P,) scores, higher = more worth matching


def shortlist_pairs(desc: np.ndarray, conf: Optional[dict] = None, pair_score: Optional[PairScore] = None,
                    union: Optional[np.ndarray] = None) -> List[Pair]:
    """Sorted unique ``(i, j)`` with ``i < j`` to match, from (N, D) unit descriptors; ``pair_score``
    ranks the candidates with ``rerank: mutual``; ``union``: a second descriptor (N, D') whose
    ``union_k`` nearest neighbours per image are added."""
    conf = {**default_conf, **(conf or {})}
    n = len(desc)
    if n < 2:
        return []
    if n < conf["exhaustive_below"]:
        return list(combinations(range(n), 2))
    pairs = set(sequence_pairs(n, int(conf["sequence_window"])))
    if conf["rerank"] == "mutual":
        if pair_score is None:
            raise ValueError("pairs.rerank=mutual needs a pair score (the pipeline passes prematch's)")
        c = int(conf["rerank_candidates"])
        cand = sorted(nearest_pairs(desc, c, c, None, int(conf["block"])))
        pairs |= rerank_pairs(cand, pair_score(cand), n, int(conf["k"]), float(conf["rerank_min"]))
    else:
        pairs |= nearest_pairs(desc, int(conf["k"]), int(conf["max_k"]), conf["min_similarity"], int(conf["block"]))
    if union is not None:
        pairs |= nearest_pairs(union, int(conf["union_k"]), int(conf["union_k"]), None, int(conf["block"]))
    if conf["mst"]:
        if n > int(conf["mst_max"]):
            log.warning("pairs.mst: %d images > pairs.mst_max=%d; no spanning tree added", n, conf["mst_max"])
        else:
            pairs |= spanning_pairs(desc, int(conf["block"]))
    return sorted(pairs)


def spanning_pairs(desc: np.ndarray, block: int) -> Set[Pair]:
    """The maximum spanning tree of the cosine-similarity graph of ``desc`` (Prim on the dense matrix)."""
    n = len(desc)
    sim = np.concatenate([desc[s:s + block] @ desc.T for s in range(0, n, block)])
    in_tree = np.zeros(n, bool)
    in_tree[0] = True
    best, parent = sim[0].astype(np.float64), np.zeros(n, int)
    pairs: Set[Pair] = set()
    for _ in range(n - 1):
        j = int(np.argmax(np.where(in_tree, -np.inf, best)))
        i = int(parent[j])
        pairs.add((min(i, j), max(i, j)))
        in_tree[j] = True
        closer = sim[j] > best
        best[closer], parent[closer] = sim[j][closer], j
    return pairs


def nearest_pairs(desc: np.ndarray, k: int, max_k: int, min_similarity: Optional[float], block: int) -> Set[Pair]:
    """Each image with its ``k`` most similar others, plus up to ``max_k`` above ``min_similarity``."""
    n = len(desc)
    pairs: Set[Pair] = set()
    k = min(k, n - 1)
    max_k = min(max(max_k, k), n - 1)
    for start in range(0, n, block):
        sim = desc[start:start + block] @ desc.T
        rows = np.arange(len(sim))
        sim[rows, rows + start] = -np.inf  # no self pairs
        top = np.argpartition(-sim, max_k - 1, axis=1)[:, :max_k]
        top_sim = np.take_along_axis(sim, top, 1)
        order = np.argsort(-top_sim, axis=1, kind="stable")
        top, top_sim = np.take_along_axis(top, order, 1), np.take_along_axis(top_sim, order, 1)
        keep = np.zeros_like(top, dtype=bool)
        keep[:, :k] = True
        if min_similarity is not None:
            keep |= top_sim >= min_similarity
        for r, c in zip(*np.nonzero(keep)):
            i, j = start + int(r), int(top[r, c])
            pairs.add((min(i, j), max(i, j)))
    return pairs


def rerank_pairs(cand: Sequence[Pair], scores: np.ndarray, n: int, k: int, min_score: float = 0.0) -> Set[Pair]:
    """The candidates among each image's ``k`` highest-scoring ones (ties: the earlier candidate) that
    score at least ``min_score``; an image's best candidate is kept whatever its score."""
    mine: List[List[int]] = [[] for _ in range(n)]
    for p, (i, j) in enumerate(cand):
        mine[i].append(p)
        mine[j].append(p)
    keep: Set[Pair] = set()
    for ps in mine:
        best = sorted(ps, key=lambda p: -scores[p])[:k]
        keep |= {cand[p] for r, p in enumerate(best) if r == 0 or scores[p] >= min_score}
    return keep


def sequence_pairs(n: int, window: int) -> List[Pair]:
    """Consecutive frames of a sequence (names sorted = time order): ``(i, i+1) ... (i, i+window)``."""
    return [(i, j) for i in range(n) for j in range(i + 1, min(n, i + window + 1))]
