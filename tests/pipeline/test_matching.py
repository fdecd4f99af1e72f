"""LightGlue matching stage: batched passes give the per-pair answer (real ALIKED + LightGlue, CPU)."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from memposer.data.synthetic.competition import _rng
from memposer.data.synthetic.generate import load_conf, random_scene_spec, render_scene
from memposer.pipeline.features import extract_features
from memposer.pipeline.matching import match_pairs, read_matches


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    d = tmp_path_factory.mktemp("match")
    conf = load_conf("tiny", long_side=256)
    rng = _rng(11, 0)
    res = render_scene(random_scene_spec(conf, rng, n_images=4, style="street"), rng, conf)
    names = []
    for i, im in enumerate(res["images"]):
        names.append(f"{i}.png")
        Image.fromarray(im).save(d / names[-1])
    status = extract_features(d, names, d / "features.h5",
                              {"max_num_keypoints": 256, "device": "cpu"}, progress=False)
    assert all(status.values())
    return d, names


def _matches(d, pairs, tag, **conf):
    path = d / f"matches-{tag}.h5"
    assert match_pairs(pairs, d / "features.h5", path, {"device": "cpu", **conf}, progress=False) == len(pairs)
    with h5py.File(path, "r") as f:
        return {p: read_matches(f, *p) for p in pairs}


@pytest.mark.timeout(300)  # a batch that prunes across pairs grows its keypoints each layer: never ends
def test_batched_matching_equals_pair_by_pair(features):
    """A batch must not mix pairs: LightGlue's pruning decides per batch, so batches run without it."""
    d, names = features
    pairs = [(names[0], names[1]), (names[1], names[2]), (names[0], names[2]), (names[2], names[3]),
             (names[0], names[3])]
    one = _matches(d, pairs, "one", batch_size=1, depth_confidence=-1, width_confidence=-1)
    batched = _matches(d, pairs, "batched", batch_size=4)  # default conf asks for adaptivity
    assert sum(len(m) for m in one.values()) > 100  # neighbouring views do match
    for p in pairs:
        a = {tuple(r) for r in one[p]}
        b = {tuple(r) for r in batched[p]}
        assert all(0 <= i < 256 and 0 <= j < 256 for i, j in b)
        assert len(a ^ b) <= max(2, 0.02 * len(a)), f"{p}: {len(a ^ b)} of {len(a)} matches differ"


def test_threaded_extraction_equals_serial_and_leaves_bad_images_out(features, tmp_path):
    """features.workers > 1: the same keypoints as one image at a time, in the cache under the same
    names; an unreadable and a too-small image are left out without stopping the others."""
    d, names = features
    Image.new("RGB", (12, 9)).save(d / "tiny.png")  # smaller than the network's strides
    (d / "broken.png").write_bytes(b"not an image")
    all_names = [*names[:2], "broken.png", "tiny.png", *names[2:]]
    out = {}
    for w in (1, 2):
        status = extract_features(d, all_names, tmp_path / f"f{w}.h5",
                                  {"max_num_keypoints": 256, "device": "cpu", "workers": w}, progress=False)
        assert status == {**{n: True for n in names}, "broken.png": False, "tiny.png": False}
        with h5py.File(tmp_path / f"f{w}.h5", "r") as f:
            out[w] = {n: f[n]["keypoints"][()] for n in names}
            assert sorted(f.keys()) == sorted(names)
    for n in names:
        np.testing.assert_allclose(out[1][n], out[2][n], atol=1e-3)
