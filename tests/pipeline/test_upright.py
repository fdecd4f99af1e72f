"""Upright stage: images turned by quarter turns are found and extracted in their turn (real ALIKED +
LightGlue on rendered views, CPU), keypoints stay in the file's pixels."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image

from memposer.data.synthetic.competition import _rng
from memposer.data.synthetic.generate import load_conf, random_scene_spec, render_scene
from memposer.pipeline.features import extract_features
from memposer.pipeline.matching import match_pairs, read_matches
from memposer.pipeline.upright import rotate_points, solve_turns, turned_size, unrotate_points

TURNED = {2: 2, 4: 1}  # image index -> quarter turns applied to its file (np.rot90)
UP = {"enabled": True, "resize_max": 256, "max_num_keypoints": 256}


def test_rotate_points_follows_rot90_pixel_for_pixel():
    img = np.random.default_rng(0).random((5, 7))  # h 5, w 7: turns change the shape
    ys, xs = np.mgrid[0:5, 0:7]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    for k in range(4):
        turned = np.rot90(img, k)
        q = rotate_points(pts, k, (7, 5))
        assert turned_size((7, 5), k) == (turned.shape[1], turned.shape[0])
        assert np.array_equal(turned[q[:, 1].astype(int), q[:, 0].astype(int)], img.ravel())
        assert np.allclose(unrotate_points(q, k, (7, 5)), pts)


def test_solve_turns_turns_a_group_that_mostly_sees_itself():
    """Images 6-9 are turned by 2 and vote mostly among themselves (relative turn 0); two bridging
    votes say 2. Moving one image at a time cannot turn the group; the spanning forest does."""
    truth = np.array([0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 0, 3])
    votes = []
    for i in range(12):
        for j in range(12):
            if i != j and abs(i - j) <= 2:  # a sequence: neighbours see each other
                votes.append((i, j, int((truth[i] - truth[j]) % 4), 40.0))
    votes.append((3, 9, 1, 5.0))  # a weak wrong vote changes nothing
    assert np.array_equal(solve_turns(12, votes, {"min_gain": 12.0}), truth)
    # unrelated images (no votes) keep their orientation
    assert np.array_equal(solve_turns(3, [], {}), [0, 0, 0])


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    """Six rendered views of one street scene: ``plain/`` as rendered, ``turned/`` with images 2 and 4
    turned (as a camera held upside down or sideways without EXIF would write them)."""
    d = tmp_path_factory.mktemp("upright")
    conf = load_conf("tiny", long_side=256)
    rng = _rng(11, 0)
    res = render_scene(random_scene_spec(conf, rng, n_images=6, style="street"), rng, conf)
    names = [f"{i}.png" for i in range(len(res["images"]))]
    for sub in ("plain", "turned"):
        (d / sub).mkdir()
    for i, (name, im) in enumerate(zip(names, res["images"])):
        Image.fromarray(im).save(d / "plain" / name)
        Image.fromarray(np.ascontiguousarray(np.rot90(im, TURNED.get(i, 0)))).save(d / "turned" / name)
    return d, names


def _extract(folder, names, out, upright: dict):
    conf = {"max_num_keypoints": 256, "device": "cpu", "upright": upright}
    assert all(extract_features(folder, names, out, conf, progress=False).values())
    with h5py.File(out, "r") as f:
        return {n: {k: f[n][k][()] for k in ("keypoints", "descriptors")} | {"turn": int(f[n].attrs["turn"])}
                for n in names}


def test_turned_images_are_found_and_extracted_upright(views):
    d, names = views
    plain = _extract(d / "plain", names, d / "plain.h5", {"enabled": False})
    up = _extract(d / "turned", names, d / "turned-up.h5", UP)
    assert [up[n]["turn"] for n in names] == [(-TURNED.get(i, 0)) % 4 for i in range(len(names))]
    for i, n in enumerate(names):
        # the file turned back is the rendered image: the same keypoints, in the turned file's pixels
        w, h = Image.open(d / "plain" / n).size
        expected = rotate_points(plain[n]["keypoints"], TURNED.get(i, 0), (w, h))
        order_e, order_u = np.lexsort(expected.T), np.lexsort(up[n]["keypoints"].T)
        assert np.allclose(expected[order_e], up[n]["keypoints"][order_u], atol=1e-3), n
    # a second run reads the turns from the cache instead of probing again
    with h5py.File(d / "turned-up.h5", "r") as f:
        assert "turns" in f.attrs


def test_turned_images_match_their_neighbours_only_upright(views):
    """LightGlue between a turned image and a neighbour it overlaps with (many matches as rendered):
    few matches as the files are, as many as rendered once the turned image is extracted in its turn."""
    d, names = views
    _extract(d / "plain", names, d / "plain.h5", {"enabled": False})
    _extract(d / "turned", names, d / "turned-off.h5", {"enabled": False})
    _extract(d / "turned", names, d / "turned-up.h5", UP)
    pairs = [(names[i], names[j]) for i in TURNED for j in range(len(names)) if j not in TURNED]
    counts = {}
    for tag, feats in (("plain", "plain"), ("off", "turned-off"), ("up", "turned-up")):
        path = d / f"matches-{tag}.h5"
        match_pairs(pairs, d / f"{feats}.h5", path, {"device": "cpu"}, progress=False)
        with h5py.File(path, "r") as f:
            counts[tag] = np.array([len(read_matches(f, *p)) for p in pairs])
    overlap = counts["plain"] >= 40
    assert overlap.sum() >= 2, counts
    assert np.all(counts["up"][overlap] >= 0.8 * counts["plain"][overlap]), counts
    assert np.all(counts["off"][overlap] * 3 <= counts["up"][overlap]), counts


def test_read_turns_reads_each_images_turn_and_defaults_to_upright(tmp_path):
    from memposer.pipeline.upright import read_turns  # noqa: PLC0415
    with h5py.File(tmp_path / "features.h5", "w") as f:
        f.create_group("a.jpg").attrs["turn"] = 2
        f.create_group("b.jpg")  # written before turns were recorded
        f.create_group("c.jpg").attrs["turn"] = 3
    assert read_turns(tmp_path / "features.h5", ["c.jpg", "a.jpg", "b.jpg", "missing.jpg"]).tolist() == [3, 2, 0, 0]


def test_the_probe_extracts_turns_in_batches_as_one_at_a_time(views):
    """``extract_turns`` (two batched passes, turns 0+2 and 1+3) gives each turn's features as
    ``extract_one`` does, keypoints in the original image's pixels."""
    import torch

    from memposer.pipeline import images
    from memposer.pipeline.features import build_extractor, default_conf, extract_one, extract_turns

    d, names = views
    dec = images.decode_image(d / "plain" / names[0])
    img = images.prepare_image(dec, {"resize_max": 256, "grayscale": False})
    model = build_extractor({**default_conf, "max_num_keypoints": 128}, torch.device("cpu"))
    batched = extract_turns(model, img, torch.device("cpu"), [0, 1, 2, 3])
    assert sorted(batched) == [0, 1, 2, 3]
    for k in range(4):
        one = extract_one(model, img, torch.device("cpu"), k)
        assert np.abs(batched[k]["keypoints"] - one["keypoints"]).max() < 1e-2
        assert np.abs(batched[k]["descriptors"].astype(np.float32) - one["descriptors"]).max() < 1e-2
    assert not np.allclose(batched[0]["descriptors"], batched[1]["descriptors"])  # turns do differ


def test_a_draft_decode_is_a_smaller_copy_of_the_same_picture(tmp_path):
    """``decode_image(draft=N)``: a JPEG comes back at a DCT-reduced scale with sides >= N, and the
    probe's 320 px copy made from it is the one made from the full decode, up to resampling."""
    from memposer.pipeline import images

    rng = np.random.default_rng(0)
    small = rng.random((60, 80, 3))
    big = np.kron(small, np.ones((25, 25, 1)))  # 1500 x 2000, smooth enough for JPEG
    Image.fromarray((255 * big).astype(np.uint8)).save(tmp_path / "a.jpg", quality=95)
    full, draft = images.decode_image(tmp_path / "a.jpg"), images.decode_image(tmp_path / "a.jpg", draft=320)
    assert full.image.size == (2000, 1500) and min(draft.image.size) >= 320 and max(draft.image.size) <= 1000
    a, b = (images.prepare_image(d, {"resize_max": 320, "grayscale": False}) for d in (full, draft))
    assert a.image.shape == b.image.shape == (240, 320, 3)
    assert np.abs(a.image - b.image).mean() < 0.03
    Image.fromarray((255 * big).astype(np.uint8)).save(tmp_path / "a.png")
    assert images.decode_image(tmp_path / "a.png", draft=320).image.size == (2000, 1500)  # PNG: no draft
