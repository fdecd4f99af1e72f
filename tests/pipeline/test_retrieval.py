"""DINOv2 retrieval shares the features stage's decode: one decode per image per run, same descriptors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from memposer.models import backbone
from memposer.pipeline import images
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
