"""Stage-level behaviour that needs no images: pair shortlisting, clustering, VLAD retrieval,
reconstruction settings."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from memposer.pipeline.clustering import cluster_images
from memposer.pipeline.pairs import shortlist_pairs
from memposer.pipeline.reconstruction import reconstruct_clusters
from memposer.pipeline.retrieval import kmeans, vlad


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_small_sets_are_exhaustive():
    desc = _unit(np.random.randn(7, 16))
    assert shortlist_pairs(desc, {"exhaustive_below": 10}) == list(combinations(range(7), 2))


def test_shortlist_grows_linearly_and_keeps_true_neighbours():
    rng = np.random.default_rng(0)
    for n in (100, 400):
        centres = _unit(rng.normal(size=(n // 10, 32)))
        desc = _unit(np.repeat(centres, 10, 0) + 0.05 * rng.normal(size=(n, 32)))  # groups of 10
        pairs = shortlist_pairs(desc, {"exhaustive_below": 20, "k": 5, "max_k": 5, "block": 64})
        assert n * 5 / 2 <= len(pairs) <= n * 5  # O(n k), never O(n^2)
        assert all(i < j for i, j in pairs) and len(set(pairs)) == len(pairs)
        same = sum(i // 10 == j // 10 for i, j in pairs)
        assert same == len(pairs)  # every shortlisted neighbour is from the image's own group


def test_similarity_threshold_adds_neighbours_up_to_max_k():
    rng = np.random.default_rng(1)
    desc = _unit(np.ones((30, 8)) + 0.01 * rng.normal(size=(30, 8)))  # all near-identical
    few = shortlist_pairs(desc, {"exhaustive_below": 2, "k": 2, "max_k": 2})
    more = shortlist_pairs(desc, {"exhaustive_below": 2, "k": 2, "max_k": 6, "min_similarity": 0.9})
    assert len(more) > len(few)
    assert len(more) <= 30 * 6  # each image adds at most max_k pairs


def test_spanning_tree_links_the_islands_of_the_neighbour_lists():
    """Three tight groups of 8 (far apart): 5-nearest-neighbour lists never leave a group; the maximum
    spanning tree adds exactly the two most similar links between groups, and it is the exact tree."""
    import networkx as nx

    from memposer.pipeline.pairs import spanning_pairs

    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(3, 16)))
    desc = _unit(np.repeat(centres, 8, 0) + 0.02 * rng.normal(size=(24, 16)))
    conf = {"exhaustive_below": 10, "k": 5, "max_k": 5}
    knn = set(shortlist_pairs(desc, conf))
    group = np.repeat(np.arange(3), 8)
    assert all(group[i] == group[j] for i, j in knn)
    with_tree = set(shortlist_pairs(desc, {**conf, "mst": True}))
    added = with_tree - knn
    assert len(added) == 2 and nx.is_connected(nx.Graph(list(with_tree)))
    full = nx.Graph()
    full.add_weighted_edges_from((i, j, float(desc[i] @ desc[j])) for i, j in combinations(range(24), 2))
    assert spanning_pairs(desc, 7) == {tuple(sorted(e)) for e in nx.maximum_spanning_tree(full).edges}
    assert set(shortlist_pairs(desc, {**conf, "mst": True, "mst_max": 20})) == knn  # too many images: off


def test_union_adds_each_images_nearest_by_the_second_descriptor():
    """Descriptor A groups images (0..11) by thirds, B by parity: the union holds A's 3 nearest and
    B's 2 nearest of every image, and nothing else."""
    rng = np.random.default_rng(4)
    a = _unit(np.repeat(_unit(rng.normal(size=(3, 16))), 4, 0) + 0.05 * rng.normal(size=(12, 16)))
    b = _unit(_unit(rng.normal(size=(2, 16)))[np.arange(12) % 2] + 0.05 * rng.normal(size=(12, 16)))
    conf = {"exhaustive_below": 5, "k": 3, "max_k": 3, "union_k": 2}
    only_a = set(shortlist_pairs(a, conf))
    only_b = set(shortlist_pairs(b, {**conf, "k": 2, "max_k": 2}))
    both = set(shortlist_pairs(a, conf, union=b))
    assert both == only_a | only_b and only_b - only_a  # B brings pairs A alone would not match
    assert all(i // 4 == j // 4 for i, j in only_a) and all(i % 2 == j % 2 for i, j in only_b)


def test_clustering_cuts_weak_links_and_drops_outliers():
    a = [f"a{i}" for i in range(5)]
    b = [f"b{i}" for i in range(5)]
    verified = {p: 300 for p in combinations(a, 2)}
    verified.update({p: 250 for p in combinations(b, 2)})
    verified[("a0", "b0")] = 20  # a stray link between look-alike scenes: weak next to 250-300
    verified[("c0", "c1")] = 200  # a pair alone is too small to be a scene
    names = a + b + ["c0", "c1", "lonely"]
    for method in ("components", "louvain"):
        clusters, outliers = cluster_images(names, verified, {"method": method, "min_inliers": 15, "relative": 0.2})
        assert clusters == [a, b]
        assert sorted(outliers) == ["c0", "c1", "lonely"]
    # none: the public baseline's single cluster, the mapper alone splits it
    assert cluster_images(names, verified, {"method": "none"}) == ([sorted(names)], [])


def test_reattach_gives_weakly_linked_images_to_their_clear_best_cluster():
    a = [f"a{i}" for i in range(5)]
    b = [f"b{i}" for i in range(5)]
    verified = {p: 300 for p in combinations(a, 2)}
    verified.update({p: 250 for p in combinations(b, 2)})
    verified.update({("a0", "w"): 40, ("a1", "w"): 30, ("b0", "w"): 20})  # w: weak links, mostly to a
    verified.update({("a0", "tie"): 40, ("b0", "tie"): 35})  # no clear best cluster
    verified[("b2", "faint")] = 20  # below the reattach sum
    names = a + b + ["w", "tie", "faint", "lonely"]
    assert cluster_images(names, verified)[1] == ["w", "tie", "faint", "lonely"]  # off by default
    clusters, outliers = cluster_images(names, verified, {"reattach": 30})
    assert clusters == [a + ["w"], b] and outliers == ["tie", "faint", "lonely"]
    shuffled = names[::-1]
    assert cluster_images(shuffled, dict(reversed(list(verified.items()))), {"reattach": 30})[0] == clusters


def test_louvain_splits_a_component_held_by_a_strong_false_link():
    a = [f"a{i}" for i in range(6)]
    b = [f"b{i}" for i in range(6)]
    verified = {p: 200 for p in combinations(a, 2)}
    verified.update({p: 200 for p in combinations(b, 2)})
    verified[("a0", "b0")] = 150  # strong enough to survive the relative pruning
    assert cluster_images(a + b, verified, {"method": "components", "support": 0})[0] == [sorted(a + b)]
    assert cluster_images(a + b, verified, {"method": "louvain"})[0] == [a, b]


def test_triangle_support_cuts_strong_false_links_but_keeps_chains():
    a = [f"a{i}" for i in range(6)]
    b = [f"b{i}" for i in range(6)]
    # scene a: a video-like chain, each frame linked to the next two (no clique)
    verified = {(a[i], a[j]): 200 for i in range(6) for j in (i + 1, i + 2) if j < 6}
    verified.update({p: 200 for p in combinations(b, 2)})
    verified[("a0", "b0")] = 150  # a strong stray link: no third image is linked to both ends
    verified[("a5", "b3")] = 150
    assert cluster_images(a + b, verified, {"support": 0})[0] == [sorted(a + b)]
    assert cluster_images(a + b, verified, {"support": 1})[0] == [a, b]
    # The chain's ends lack two common neighbours, but pieces smaller than a scene get their
    # strongest cut edge back, so they rejoin their own scene and bridge nothing.
    assert cluster_images(a + b, verified, {"support": 2}) == ([a, b], [])
    verified[("x", "a3")], verified[("x", "b2")] = 90, 120  # a lone image with stray links to both
    assert cluster_images(a + b + ["x"], verified, {"support": 1}) == ([sorted(b + ["x"]), a], [])


def test_vlad_is_deterministic_and_separates_scenes():
    rng = np.random.default_rng(0)
    words = _unit(rng.normal(size=(16, 32)))
    scene_a, scene_b = words[:8], words[8:]

    def image(scene):
        idx = rng.integers(len(scene), size=200)
        return _unit(scene[idx] + 0.1 * rng.normal(size=(200, 32)))

    imgs = [image(scene_a) for _ in range(3)] + [image(scene_b) for _ in range(3)]
    centres = kmeans(np.concatenate(imgs), 8, 10, seed=0)
    assert np.array_equal(centres, kmeans(np.concatenate(imgs), 8, 10, seed=0))
    d = np.stack([vlad(x, centres) for x in imgs])
    sim = d @ d.T
    within = min(sim[0, 1], sim[0, 2], sim[3, 4], sim[3, 5])
    across = max(sim[i, j] for i in range(3) for j in range(3, 6))
    assert within > across


def test_sequence_window_adds_consecutive_frames_only_when_asked():
    rng = np.random.default_rng(2)
    desc = _unit(rng.normal(size=(40, 16)))  # unrelated descriptors: retrieval alone links at random
    plain = shortlist_pairs(desc, {"exhaustive_below": 2, "k": 2, "max_k": 2})
    seq = shortlist_pairs(desc, {"exhaustive_below": 2, "k": 2, "max_k": 2, "sequence_window": 2})
    assert set(plain) <= set(seq)
    assert {(i, i + 1) for i in range(39)} | {(i, i + 2) for i in range(38)} <= set(seq)
    assert set(seq) - set(plain) <= {(i, j) for i in range(40) for j in (i + 1, i + 2)}


def test_dinov2_retrieval_reads_local_weights(tmp_path):
    """The DINOv2 path with a weights file (random here: real weights are not in this repo)."""
    import timm
    import torch
    from PIL import Image

    from memposer.pipeline.retrieval import global_descriptors

    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518)
    torch.save(vit.state_dict(), tmp_path / "dinov2_vits14.pth")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    names = [f"{i}.png" for i in range(3)]
    desc = global_descriptors(tmp_path, names, tmp_path / "unused.h5",
                              {"method": "dinov2", "weights": str(tmp_path / "dinov2_vits14.pth"), "resize": 112})
    assert desc.shape == (3, 2 * 384) and np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-5)
    again = global_descriptors(tmp_path, names, tmp_path / "unused.h5",
                               {"method": "dinov2", "weights": str(tmp_path / "dinov2_vits14.pth"), "resize": 112})
    assert np.allclose(desc, again, atol=1e-6)  # same weights, same images: same descriptors


def test_reconstruction_config_errors_are_raised_once(tmp_path):
    """A bad ``poses`` setting is one error before any cluster starts, not one per cluster."""
    clusters = [["a.png", "b.png", "c.png"]] * 3
    with pytest.raises(ValueError, match="unknown poses path"):
        reconstruct_clusters(clusters, tmp_path / "db.db", tmp_path, tmp_path, {"poses": "bogus"}, progress=False)
    with pytest.raises(ValueError, match="needs a MemPoser checkpoint"):
        reconstruct_clusters(clusters, tmp_path / "db.db", tmp_path, tmp_path, {"poses": "seeded", "workers": 2},
                             progress=False)


def test_mutual_rerank_keeps_each_images_best_scored_candidates():
    """Global descriptors that cannot tell two groups apart; the pair score can: re-ranking keeps
    only within-group pairs, k per image, from the candidates retrieval offered."""
    rng = np.random.default_rng(3)
    n, k = 40, 3
    desc = _unit(np.ones((n, 8)) + 0.01 * rng.normal(size=(n, 8)))
    group = np.arange(n) % 2
    calls = []

    def score(pairs):
        calls.append(list(pairs))
        return np.array([100.0 + i + j if group[i] == group[j] else 5.0 for i, j in pairs])

    conf = {"exhaustive_below": 2, "k": k, "rerank": "mutual", "rerank_candidates": 12}
    pairs = shortlist_pairs(desc, conf, score)
    assert len(calls) == 1 and set(pairs) <= set(calls[0])  # only candidates, scored once
    assert all(group[i] == group[j] for i, j in pairs)
    for i in range(n):  # every image keeps its k best-scored candidates (others may add more)
        own = sorted((p for p in calls[0] if i in p), key=lambda p: -score([p])[0])[:k]
        assert set(own) <= set(pairs)
    assert n * k / 2 <= len(pairs) <= n * k
    plain = shortlist_pairs(desc, {**conf, "rerank": "none"})
    assert sum(group[i] != group[j] for i, j in plain) > 0  # retrieval alone mixes the groups
    with pytest.raises(ValueError, match="needs a pair score"):
        shortlist_pairs(desc, conf)


def test_mutual_matches_count_shared_distinctive_descriptors():
    import torch

    from memposer.pipeline.prematch import mutual_matches

    g = torch.Generator().manual_seed(0)
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
    a = unit(torch.randn(300, 128, generator=g))  # 128-d, like ALIKED
    shared = unit(a[:120] + 0.05 * torch.randn(120, 128, generator=g))  # 120 of a's seen again, with noise
    b = torch.cat([shared, unit(torch.randn(180, 128, generator=g))])
    assert mutual_matches(a, b, 0.9) == 120
    assert mutual_matches(a, unit(torch.randn(300, 128, generator=g)), 0.9) < 5  # unrelated images
    twin = torch.cat([shared, shared[:1]])  # a repeated descriptor is ambiguous: the ratio test drops it
    assert mutual_matches(a, twin, 0.9) == 119


def test_rerank_min_drops_weak_candidates_but_never_an_images_best():
    from memposer.pipeline.pairs import rerank_pairs

    # image 3 is an outlier: its candidates all score 4; the others share strong pairs
    cand = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    scores = np.array([50, 40, 30, 4, 3, 2])
    assert rerank_pairs(cand, scores, 4, 2) == {(0, 1), (0, 2), (1, 2), (0, 3), (1, 3)}
    kept = rerank_pairs(cand, scores, 4, 2, min_score=15)
    assert kept == {(0, 1), (0, 2), (1, 2), (0, 3)}  # the outlier keeps its best pair only
