"""Scene sampling: outliers excluded, split by scene, variable K with padding masks, augmentation."""
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_imc import write_tiny_imc  # noqa: E402

from memposer.data.imc import read_labels  # noqa: E402
from memposer.data.scenes import SceneDataModule, SceneSamples, collate_scenes, index_scenes, split_scenes  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_imc(tmp_path_factory.mktemp("imc"), n_datasets=2, scenes_per_dataset=3, frames=7)


def test_index_excludes_outliers_and_keeps_poses(root):
    scenes = index_scenes(root / "train_labels.csv", root / "train")
    assert len(scenes) == 6 and all(len(s) == 7 for s in scenes)
    assert not any("outlier" in p.name for s in scenes for p in s.paths)
    rec = {(r.dataset, r.image): r for r in read_labels(root / "train_labels.csv")}
    s = scenes[4]
    assert np.allclose(s.R[2], rec[(s.dataset, s.images[2])].R, atol=1e-6)


def test_split_by_scene(root):
    scenes = index_scenes(root / "train_labels.csv", root / "train")
    tr, va = split_scenes(scenes, 0.34, seed=0)
    assert len(va) == 3 and len(tr) == 3
    assert not {s.name for s in tr} & {s.name for s in va}
    tr2, va2 = split_scenes(scenes, 0.34, seed=0)
    assert [s.name for s in va2] == [s.name for s in va]
    tr3, va3 = split_scenes(scenes, 0.0, val_scenes=["ds1/scene2"])
    assert [s.name for s in va3] == ["ds1/scene2"] and len(tr3) == 5
    with pytest.raises(ValueError, match="not found"):
        split_scenes(scenes, 0.0, val_scenes=["nope/x"])


def test_samples_vary_in_k_and_collate_pads(root):
    dm = SceneDataModule(dict(root=str(root), image_size=[28, 42], frames=[2, 5], samples_per_epoch=40,
                              num_workers=0, batch_size=4, val_fraction=0.34))
    dm.setup()
    ds = SceneSamples(dm.train_scenes, dm.conf, train=True)
    ks = {len(ds[i]["images"]) for i in range(40)}
    assert ks == {2, 3, 4, 5}
    batch = collate_scenes([ds[0], ds[1], ds[2]])
    assert batch["images"].shape[-2:] == (28, 42)
    assert batch["mask"].sum().item() == sum(len(n) for n in batch["names"])
    assert 0 <= batch["images"].min() and batch["images"].max() <= 1
    val = next(iter(dm.val_dataloader()))
    val2 = next(iter(dm.val_dataloader()))
    assert torch.equal(val["images"], val2["images"])  # val samples are fixed
    assert val["mask"].sum(1).tolist() == [5] * len(val["scene"])


def test_augmentation_is_photometric_only(root):
    conf = dict(root=str(root), image_size=[28, 28], frames=[3, 3], num_workers=0, val_fraction=0.34,
                augment={"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.1, "gamma": 0.3, "noise": 0.05})
    dm = SceneDataModule(conf)
    dm.setup()
    ds = SceneSamples(dm.train_scenes, dm.conf, train=True)
    item = ds[0]
    s = next(sc for sc in dm.train_scenes if sc.name == item["scene"])
    j = s.images.index(item["names"][0])
    raw = ds._image(s.paths[j]).float() / 255
    assert (item["images"][0] - raw).abs().mean() > 0.01  # augmented
    assert torch.equal(item["R"][0], torch.from_numpy(s.R[j]))  # poses untouched


def test_sequence_scenes_give_contiguous_windows(root):
    dm = SceneDataModule(dict(root=str(root), frames=[3, 4], num_workers=0, val_fraction=0.0,
                              sequence_scenes=["ds0/scene1"], image_size=[14, 14]))
    dm.setup()
    scene = next(s for s in dm.train_scenes if s.name == "ds0/scene1")
    ds = SceneSamples([scene], dm.conf, train=True)
    for i in range(10):
        it = ds[i]
        idx = [scene.images.index(n) for n in it["names"]]
        assert it["is_sequence"] and idx == list(range(idx[0], idx[0] + len(idx)))


def test_missing_labels_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        SceneDataModule(dict(root=str(tmp_path)))
    with pytest.raises(ValueError, match="data.root is not set"):
        SceneDataModule({})


def test_several_roots_are_kept_apart(tmp_path):
    a = write_tiny_imc(tmp_path / "a", n_datasets=1, scenes_per_dataset=2, frames=4, seed=1)
    b = write_tiny_imc(tmp_path / "b", n_datasets=1, scenes_per_dataset=2, frames=4, seed=2)
    dm = SceneDataModule(dict(root=[str(a), str(b)], num_workers=0, val_fraction=0.25, image_size=[14, 14],
                              preload=True, preload_threads=2))
    dm.setup()
    names = sorted(s.name for s in dm.train_scenes + dm.val_scenes)
    assert names == ["a-ds0/scene0", "a-ds0/scene1", "b-ds0/scene0", "b-ds0/scene1"]  # same names, two roots
    assert set(dm.thresholds) == {"a-ds0", "b-ds0"}
    assert len(dm.cache) == 16 and all(v.dtype == torch.uint8 for v in dm.cache.values())
    s = next(sc for sc in dm.train_scenes + dm.val_scenes if sc.name.startswith("b-"))
    assert all(str(p).startswith(str(b)) for p in s.paths)
    with pytest.raises(ValueError, match="distinct names"):
        SceneDataModule(dict(root=[str(a), str(tmp_path / "x" / "a")]))


def test_device_augmentation_batches(root):
    """augment_on=device: uint8 batches from the loader; floats, augmented only while training, after transfer."""
    conf = dict(root=str(root), image_size=[28, 28], frames=[3, 3], num_workers=0, val_fraction=0.34,
                augment_on="device", batch_size=2)
    dm = SceneDataModule(conf)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].dtype == torch.uint8
    raw = batch["images"].float() / 255
    dm.trainer = types.SimpleNamespace(training=False)
    val = dm.on_after_batch_transfer(dict(batch), 0)
    assert torch.equal(val["images"], raw)  # no augmentation outside training
    dm.trainer = types.SimpleNamespace(training=True)
    aug = dm.on_after_batch_transfer(dict(batch), 0)["images"]
    assert aug.dtype == torch.float32 and 0 <= aug.min() and aug.max() <= 1
    diff = (aug - raw).abs().mean((-3, -2, -1))
    assert (diff > 0.005).all()  # every frame changed ...
    assert diff.std() > 1e-3  # ... each by its own draw
    with pytest.raises(ValueError, match="augment_on"):
        SceneDataModule(dict(conf, augment_on="gpu"))
