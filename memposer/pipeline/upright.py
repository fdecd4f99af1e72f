"""Image rotation by quarter turns: find which images of a dataset are turned against the others.

Local features such as ALIKED are not rotation invariant, and LightGlue was trained on upright pairs:
an image taken with the camera upside down (or sideways, with no EXIF orientation) matches its
upright neighbours poorly, and the scene falls apart at it (middlebury's temple, docs/results.md).
Before the features stage, each image is described at low resolution in each quarter turn; for each
image and each of up to ``max_refs`` other images, the turn of the first under which the two share
the most mutual nearest-neighbour descriptors (by a margin over the next turn) is a vote for their
relative turn. A maximum spanning forest over the pairs with the clearest relative turn fixes one turn
per image (a turned group that mostly sees itself turns as a whole), a few sweeps of coordinate
ascent then move single images to the turn most votes give them, and each group keeps the
orientation most of its images have (unrelated pairs vote no turn more often than another, so they
add noise, not bias). The features stage then extracts each image in
its turn and maps the keypoints back: everything after it, COLMAP and the submission included, stays
in the original image's pixels; only the matcher sees the turned frame (``canonical_keypoints``).

Turns follow ``numpy.rot90``: ``k`` quarter turns counter-clockwise.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import networkx as nx
import numpy as np
import torch

log = logging.getLogger(__name__)

default_conf = {
    "enabled": False,
    "turns": [0, 1, 2, 3],      # quarter turns tried (0 must be among them)
    "resize_max": 320,          # the probe's image size and keypoints: cheap, enough to vote
    "max_num_keypoints": 256,
    "max_refs": 48,             # other images each image is compared with (evenly spread, deterministic)
    "min_similarity": 0.7,      # cosine of a mutual nearest neighbour to count
    "min_gain": 12.0,           # votes an image's best turn needs over keeping its own orientation
    "sweeps": 5,
}


def rotate_points(xy: np.ndarray, k: int, size: Tuple[int, int]) -> np.ndarray:
    """Pixel-centre points (M,2) of an image of ``size`` (w, h) -> the same points in the image turned
    by ``k`` quarter turns counter-clockwise (as ``np.rot90(image, k)``)."""
    xy = np.asarray(xy, np.float64).copy()
    w, h = size
    for _ in range(k % 4):
        xy = np.stack([xy[:, 1], w - 1 - xy[:, 0]], 1)  # one turn: (x, y) -> (y, w - 1 - x)
        w, h = h, w
    return xy


def turned_size(size: Tuple[int, int], k: int) -> Tuple[int, int]:
    return (size[1], size[0]) if k % 2 else (size[0], size[1])


def unrotate_points(xy: np.ndarray, k: int, size: Tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rotate_points`: points of the image turned by ``k`` -> the original image's
    (``size`` is the original image's (w, h))."""
    return rotate_points(xy, (4 - k % 4) % 4, turned_size(size, k))


def read_turns(features_path, names: Sequence[str]) -> np.ndarray:
    """(N,) quarter turns of ``names`` as a features file records them (0 where not recorded)."""
    import h5py  # noqa: PLC0415
    with h5py.File(features_path, "r") as f:
        return np.array([int(f[n].attrs.get("turn", 0)) if n in f else 0 for n in names], int)


def canonical_keypoints(feats: dict) -> Tuple[np.ndarray, np.ndarray]:
    """Keypoints and (w, h) in the frame the descriptors were computed in (the image's turn)."""
    k, size = int(feats.get("turn", 0)), tuple(int(s) for s in feats["size"])
    if k == 0:
        return feats["keypoints"], np.asarray(size)
    return rotate_points(feats["keypoints"], k, size).astype(np.float32), np.asarray(turned_size(size, k))


def _mnn_counts(a: torch.Tensor, b: torch.Tensor, min_sim: float) -> torch.Tensor:
    """Mutual nearest neighbours with cosine >= ``min_sim`` of each descriptor set in ``a`` (T,K,D)
    with each in ``b`` (R,K,D) (L2-normalised, zero rows as padding) -> counts (T,R)."""
    s = torch.einsum("tkd,rld->trkl", a, b)
    best_b, best_a = s.argmax(3), s.argmax(2)                          # (T,R,K), (T,R,L)
    back = torch.gather(best_a, 2, best_b)                             # best_a at each row's best column
    mutual = back == torch.arange(a.shape[1], device=a.device)
    return (mutual & (s.amax(3) >= min_sim)).sum(2)


def _refs(n: int, max_refs: int) -> List[List[int]]:
    """For each image, the others it is compared with: all, or ``max_refs`` spread evenly."""
    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        if len(others) > max_refs:
            idx = np.linspace(0, len(others) - 1, max_refs).round().astype(int)
            others = [others[t] for t in idx]
        out.append(others)
    return out


def _padded(desc: Sequence[np.ndarray], device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Descriptor sets of different sizes -> (M,K,D) L2-normalised, zero rows as padding."""
    k = max(len(d) for d in desc)
    out = torch.zeros(len(desc), k, desc[0].shape[1])
    for i, d in enumerate(desc):
        out[i, :len(d)] = torch.nn.functional.normalize(torch.from_numpy(np.asarray(d, np.float32)), dim=-1)
    return out.to(device)


@torch.no_grad()
def relative_turn_votes(desc: Sequence[Dict[int, np.ndarray]], conf: dict, device: torch.device = torch.device("cpu")
                        ) -> List[Tuple[int, int, int, float]]:
    """``desc[i][k]`` = image i's descriptors in turn k -> votes ``(i, j, r, weight)``: image i turned by
    r looks like image j unturned, by ``weight`` more mutual matches than under any other turn."""
    conf = {**default_conf, **conf}
    turns = [k % 4 for k in conf["turns"]]
    upright_sets = _padded([d[0] for d in desc], device)
    chunk = 8 if device.type == "cpu" else 48  # the similarity block is turns x chunk x K x K floats
    votes = []
    for i, refs in enumerate(_refs(len(desc), int(conf["max_refs"]))):
        query = _padded([desc[i][k] for k in turns], device)
        counts = torch.cat([_mnn_counts(query, upright_sets[refs[c:c + chunk]], conf["min_similarity"])
                            for c in range(0, len(refs), chunk)], 1).cpu().numpy()   # (turns, refs)
        top2 = np.sort(counts, 0)[::-1]
        margin = top2[0] - (top2[1] if len(turns) > 1 else 0)
        best = np.array(turns)[counts.argmax(0)]                     # ties: the first turn listed
        votes += [(i, j, int(b), float(m)) for j, b, m in zip(refs, best, margin) if m > 0]
    return votes


def _pair_evidence(votes: List[Tuple[int, int, int, float]]) -> Dict[Tuple[int, int], np.ndarray]:
    """Votes of both directions summed per unordered pair (i < j): weight per value of turn_i - turn_j."""
    ev: Dict[Tuple[int, int], np.ndarray] = {}
    for i, j, r, w in votes:
        key, d = ((i, j), r) if i < j else ((j, i), -r % 4)
        ev.setdefault(key, np.zeros(4))[d] += w
    return ev


def solve_turns(n: int, votes: List[Tuple[int, int, int, float]], conf: dict) -> np.ndarray:
    """One turn per image (0-3) agreeing with the vote weight: ``turn[i] - turn[j] = r`` per vote.

    The strongest pairs first (a maximum spanning forest over pairs whose best relative turn leads by
    ``min_gain``): a group of turned images that mostly see each other turns as a whole, which
    one-image-at-a-time moves cannot do. Then sweeps move single images to the turn most votes
    give them, by ``min_gain`` at least. Each connected group keeps the orientation most of its
    images have."""
    conf = {**default_conf, **conf}
    allowed = sorted({k % 4 for k in conf["turns"]})
    ev = _pair_evidence(votes)
    edges = []
    for (i, j), w in ev.items():
        d = int(np.argmax(w))
        lead = w[d] - np.partition(w, -2)[-2]
        if lead >= conf["min_gain"]:
            edges.append((lead, i, j, d))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for lead, i, j, d in edges:
        g.add_edge(i, j, weight=lead, d=d)  # d = turn_i - turn_j
    forest = nx.maximum_spanning_tree(g)
    turns = np.zeros(n, int)
    for comp in nx.connected_components(forest):
        group = sorted(comp)
        for a, b in nx.bfs_edges(forest, group[0]):
            d = forest.edges[a, b]["d"]
            turns[b] = (turns[a] - d) % 4 if a < b else (turns[a] + d) % 4
        turns[group] = (turns[group] - np.bincount(turns[group], minlength=4).argmax()) % 4
    by_image: List[List[Tuple[int, int, float]]] = [[] for _ in range(n)]
    for (i, j), w in ev.items():
        for d in range(4):
            if w[d] > 0:
                by_image[i].append((j, d, w[d]))        # turn_i = turn_j + d
                by_image[j].append((i, -d % 4, w[d]))   # turn_j = turn_i - d
    for _ in range(int(conf["sweeps"])):
        changed = False
        for i in range(n):
            score = np.zeros(4)
            for j, d, w in by_image[i]:
                score[(turns[j] + d) % 4] += w
            best = max(allowed, key=lambda k: (score[k], k == turns[i]))
            if best != turns[i] and score[best] - score[turns[i]] >= conf["min_gain"]:
                turns[i], changed = best, True
        if not changed:
            break
    return turns


def probe_descriptors(img, extract, conf: dict) -> Dict[int, np.ndarray]:
    """One probe image (``images.LoadedImage`` at the probe's size) -> ``{turn: descriptors}``;
    ``extract(img, turns) -> {turn: {"descriptors": ...}}`` is the probe's extractor
    (``features.extract_turns``)."""
    conf = {**default_conf, **conf}
    turns = sorted({k % 4 for k in conf["turns"]})
    return {k: np.asarray(f["descriptors"], np.float16) for k, f in extract(img, turns).items()}


def estimate_turns(desc: Sequence[Dict[int, np.ndarray]], conf: dict, device: torch.device = torch.device("cpu")
                   ) -> np.ndarray:
    """Probe descriptors of a dataset's images (:func:`probe_descriptors`) -> one turn (0-3) per image;
    the votes' similarity blocks are computed on ``device``."""
    conf = {**default_conf, **conf}
    if len(desc) < 2:
        return np.zeros(len(desc), int)
    return solve_turns(len(desc), relative_turn_votes(desc, conf, device), conf)
