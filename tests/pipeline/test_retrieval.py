"""DINOv2 retrieval shares the features stage's decode: one decode per image per run, same descriptors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from memposer.models import backbone
from memposer.pipeline import images, retrieval
from memposer.pipeline.features import extract_features
from memposer.pipeline.retrieval import global_descriptors, pixel_descriptors

FEATURES = {"extractor": "aliked", "max_num_keypoints": 64, "resize_max": 64, "device": "cpu"}
DINO = {"method": "dinov2", "weights": "given", "resize": 56, "device": "cpu"}


_build = backbone.build_backbone


def _tiny_backbone(name, weights=None):
    torch.manual_seed(0)  # the same random network every time it is built
    return _build(name, None, warn_if_random=False, depth=2, embed_dim=48, num_heads=2, img_size=56)


@pytest.fixture
def opened(monkeypatch):
    """Names of the files PIL opens, in order."""
    names, real = [], Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: names.append(Path(fp).name) or real(fp, *a, **k))
    monkeypatch.setattr(backbone, "build_backbone", _tiny_backbone)
    return names


def _photos(folder: Path, n: int = 4):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (72 + 8 * i, 96, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return sorted(p.name for p in folder.iterdir())


def test_dinov2_retrieval_decodes_each_image_once(tmp_path, opened):
    names = _photos(tmp_path / "imgs")
    h5 = tmp_path / "features.h5"
    describer = pixel_descriptors(DINO, progress=False)
    assert all(extract_features(tmp_path / "imgs", names, h5, FEATURES, False, describer.add).values())
    shared = global_descriptors(tmp_path / "imgs", names, h5, DINO, False, describer)
    assert sorted(opened) == names                      # features and retrieval: one decode each
    opened.clear()
    alone = global_descriptors(tmp_path / "imgs", names, h5, DINO, False)
    assert sorted(opened) == names                      # the stage alone decodes what it needs
    np.testing.assert_array_equal(shared, alone)        # and gets the very same descriptors
    assert shared.shape == (4, 96) and np.allclose(np.linalg.norm(shared, axis=1), 1)
    opened.clear()                                      # features cached: retrieval decodes, once each
    again = pixel_descriptors(DINO, progress=False)
    extract_features(tmp_path / "imgs", names, h5, FEATURES, False, again.add)
    np.testing.assert_array_equal(global_descriptors(tmp_path / "imgs", names, h5, DINO, False, again), shared)
    assert sorted(opened) == names


def test_vlad_needs_no_pixels():
    assert pixel_descriptors({"method": "vlad"}) is None
    assert pixel_descriptors({"method": "dinov2", "weights": None}) is None  # falls back to VLAD


def test_unreadable_file_is_none_with_one_warning(tmp_path, caplog):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    assert images.decode_image(bad) is None and images.load_image(bad) is None
    assert caplog.text.count("cannot read image") == 2


def _scenes(folder: Path, per_scene: int = 4):
    """Two 'scenes' of different colours and layouts; each view shifted a little within its scene."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    names, scene = [], []
    for s, base in enumerate(([200, 80, 40], [40, 90, 210])):
        world = np.clip(rng.normal(base, 40, (40, 120, 3)), 0, 255).astype(np.uint8)
        world[:, 60 * s:60 * s + 30] = 255 - world[:, 60 * s:60 * s + 30]  # a bright band where the scene has it
        for v in range(per_scene):
            name = f"s{s}_{v}.png"
            Image.fromarray(world[:, 4 * v:4 * v + 80]).resize((160, 80)).save(folder / name)
            names.append(name)
            scene.append(s)
    return names, np.array(scene)


def test_thumb_descriptors_group_scenes_and_follow_the_upright_turns(tmp_path):
    names, scene = _scenes(tmp_path / "imgs")
    h5 = tmp_path / "features.h5"
    extract_features(tmp_path / "imgs", names, h5, FEATURES, False)
    desc = global_descriptors(tmp_path / "imgs", names, h5, {"method": "thumb"}, False)
    sim = desc @ desc.T
    np.fill_diagonal(sim, -1)
    assert (scene[sim.argmax(1)] == scene).all()                 # every image's nearest is from its scene
    assert np.allclose(np.linalg.norm(desc, axis=1), 1)
    # an image the features stage turned is described turned, as add() would have seen it
    describer = pixel_descriptors({"method": "thumb"})
    turned = describer.parts["thumb"].describe(tmp_path / "imgs", names[:1], {names[0]: 1})
    dec = images.decode_image(tmp_path / "imgs" / names[0])
    again = pixel_descriptors({"method": "thumb"})
    again.add(images.DecodedImage(dec.path, dec.image.rotate(90, expand=True), None))
    np.testing.assert_allclose(turned[0], again.parts["thumb"].desc[names[0]] / np.linalg.norm(
        again.parts["thumb"].desc[names[0]]), atol=1e-6)
    assert not np.allclose(turned[0], desc[0])


def test_fused_similarity_is_the_weighted_mean_of_the_two_methods(tmp_path):
    names, _ = _scenes(tmp_path / "imgs")
    h5 = tmp_path / "features.h5"
    extract_features(tmp_path / "imgs", names, h5, FEATURES, False)
    one, two = (global_descriptors(tmp_path / "imgs", names, h5, {"method": m}, False) for m in ("vlad", "thumb"))
    fused = global_descriptors(tmp_path / "imgs", names, h5, {"method": "vlad", "fuse": "thumb", "fuse_weight": 0.3},
                               False)
    np.testing.assert_allclose(fused @ fused.T, 0.7 * one @ one.T + 0.3 * two @ two.T, atol=1e-5)
    # without DINOv2 weights, dinov2 + thumb runs VLAD + thumb
    same = global_descriptors(tmp_path / "imgs", names, h5, {"method": "dinov2", "fuse": "thumb", "fuse_weight": 0.3},
                              False)
    np.testing.assert_allclose(same, fused, atol=1e-6)


def test_whitening_fitted_on_a_train_split_is_applied_and_checked(tmp_path):
    from memposer.pipeline import checks, retrieval_fit
    from memposer.pipeline.cli import load_infer_config

    train = tmp_path / "train"
    train.mkdir()
    for ds in ("a", "b"):
        _scenes(train / ds)
    conf = load_infer_config("cpu", ["features.max_num_keypoints=64", "features.resize_max=160",
                                     "features.workers=1", "retrieval.vlad_words=4"])
    npz = tmp_path / "white.npz"
    meta = retrieval_fit.fit(train, npz, conf, ["vlad", "thumb"], 6, tmp_path / "work", progress=False)
    assert meta["images"] == 16 and meta["settings"]["extractor"] == "aliked"
    white = retrieval.load_whitening(str(npz))
    assert white.codebook.shape == (4, 128)
    # on its own train data the whitened descriptors are decorrelated with equal variances
    raw = retrieval_fit.describe_split(train, tmp_path / "work", conf, ["thumb"], progress=False)["thumb"]
    comp, var = white.arrays["thumb_components"], white.arrays["thumb_variance"]
    z = ((raw - white.arrays["thumb_mean"]) @ comp.T) / np.sqrt(var)
    np.testing.assert_allclose(np.cov(z.T), np.eye(6), atol=0.05)
    names, _ = _scenes(tmp_path / "test")
    h5 = tmp_path / "test.h5"
    extract_features(tmp_path / "test", names, h5, conf["features"], False)
    d = global_descriptors(tmp_path / "test", names, h5, {**conf["retrieval"], "method": "vlad", "fuse": "thumb",
                                                         "pca": str(npz)}, False)
    assert d.shape == (8, 12) and np.allclose(np.linalg.norm(d, axis=1), 1)
    checks.check_retrieval_pca({**conf, "retrieval": {**conf["retrieval"], "pca": str(npz)}})
    with pytest.raises(checks.UsageError, match="fitted on features.extractor=aliked"):
        checks.check_retrieval_pca({**conf, "features": {**conf["features"], "extractor": "disk"},
                                    "retrieval": {**conf["retrieval"], "pca": str(npz)}})
    with pytest.raises(checks.UsageError, match="cannot be read"):
        checks.check_retrieval_pca({**conf, "retrieval": {**conf["retrieval"], "pca": str(tmp_path / "none.npz")}})
