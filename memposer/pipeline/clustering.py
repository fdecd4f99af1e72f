"""Stage 7: split a dataset into scene clusters from the verified match graph.

Edges are verified pairs with at least ``min_inliers`` inliers; an edge much weaker than the best
edges of both its images (``relative``) is dropped, since the stray links between look-alike scenes
are weak next to the links within a scene. With ``support`` > 0 an edge also needs that many
common neighbours (triangles): within a scene neighbours share neighbours, while a stray link
between two scenes rarely has a third image strongly linked to both; pieces smaller than a scene
that this cuts off get their strongest edge back. Methods:

- ``components``: connected components of the pruned graph;
- ``louvain``: Louvain communities (networkx, inlier-weighted, seeded) inside each component, which
  can also cut a component held together by a few strong false links;
- ``none``: every image in one cluster, so COLMAP's mapper alone splits the scenes (the public
  baseline's way; ``benchmarks/pipeline.py`` variant ``baseline``).

Clusters smaller than ``min_size`` go to the outliers. With ``reattach`` > 0 an image left out of
every cluster (its edges all too weak) joins the cluster it has the most verified inliers with, when
they sum to ``reattach`` or more and no other cluster comes within half of that: the mapper then
decides whether it registers, instead of it being lost before COLMAP sees it. Reconstruction later
splits a cluster again when COLMAP finds several models in it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import networkx as nx
from networkx.utils import UnionFind

default_conf = {
    "method": "components",  # components | louvain | none
    "min_inliers": 60,
    "relative": 0.1,  # drop an edge below relative * (best edge) of both its images
    "support": 1,  # common neighbours an edge needs (0: off)
    "resolution": 0.5,  # louvain: lower merges more
    "min_size": 3,
    "reattach": 0,  # left-out images join their best cluster at this many inliers (0: off)
    "seed": 0,
}


def match_graph(names: Sequence[str], verified: Dict[Tuple[str, str], int], conf: dict) -> nx.Graph:
    best: Dict[str, int] = {}
    for (a, b), n in verified.items():
        best[a], best[b] = max(best.get(a, 0), n), max(best.get(b, 0), n)
    g = nx.Graph()
    g.add_nodes_from(names)
    for (a, b), n in verified.items():
        if n >= conf["min_inliers"] and n >= conf["relative"] * min(best[a], best[b]):
            g.add_edge(a, b, weight=float(n))
    if conf.get("support", 0) > 0:
        weak = [(a, b, n) for a, b, n in g.edges(data="weight") if len(set(g[a]) & set(g[b])) < conf["support"]]
        g.remove_edges_from(weak)  # judged on the same graph, so the order of removal does not matter
        _reattach_fragments(g, weak, conf["min_size"])
    return g


def _reattach_fragments(g: nx.Graph, removed: List[Tuple[str, str, float]], min_size: int) -> None:
    """Give pieces smaller than a scene, cut off by the support rule, back their strongest removed
    edge. A piece joins one component and can then bridge nothing: true end-of-sequence images
    come back, links between two scene-sized components stay cut."""
    pieces = UnionFind(g.nodes)
    for a, b in g.edges:
        pieces.union(a, b)
    for a, b, n in sorted(removed, key=lambda e: -e[2]):
        ra, rb = pieces[a], pieces[b]
        if ra == rb or min(pieces.weights[ra], pieces.weights[rb]) >= min_size:
            continue
        g.add_edge(a, b, weight=n)
        pieces.union(a, b)


def cluster_images(names: Sequence[str], verified: Dict[Tuple[str, str], int],
                   conf: Optional[dict] = None) -> Tuple[List[List[str]], List[str]]:
    """``(clusters, outliers)``: clusters as sorted name lists, largest first; the rest outliers."""
    conf = {**default_conf, **(conf or {})}
    if conf["method"] == "none":
        return [sorted(names)], []
    g = match_graph(names, verified, conf)
    groups: List[set] = []
    for comp in nx.connected_components(g):
        if conf["method"] == "components" or len(comp) < 2 * conf["min_size"]:
            groups.append(comp)
        elif conf["method"] == "louvain":
            groups += nx.community.louvain_communities(g.subgraph(comp), weight="weight",
                                                       resolution=conf["resolution"], seed=conf["seed"])
        else:
            raise ValueError(f"unknown clustering method {conf['method']!r} (components|louvain|none)")
    groups = [set(c) for c in groups if len(c) >= conf["min_size"]]
    if conf["reattach"] > 0:
        _reattach_images(groups, names, verified, conf["reattach"])
    clusters = sorted((sorted(c) for c in groups), key=lambda c: (-len(c), c[0]))
    kept = {n for c in clusters for n in c}
    return clusters, [n for n in names if n not in kept]


def _reattach_images(groups: List[set], names: Sequence[str], verified: Dict[Tuple[str, str], int],
                     min_inliers: float) -> None:
    """Add each image in no group to the group it shares the most verified inliers with (judged
    against the groups as clustering made them, so the order of the images does not matter)."""
    of = {n: i for i, g in enumerate(groups) for n in g}
    score: Dict[str, Dict[int, int]] = {}
    for (a, b), n in verified.items():
        for x, y in ((a, b), (b, a)):
            if x not in of and y in of:
                score.setdefault(x, {}).setdefault(of[y], 0)
                score[x][of[y]] += n
    for name in names:
        if name in of or name not in score:
            continue
        ranked = sorted(score[name].values(), reverse=True) + [0]
        if ranked[0] >= min_inliers and ranked[1] < 0.5 * ranked[0]:
            groups[max(score[name], key=score[name].get)].add(name)
