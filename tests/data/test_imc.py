import numpy as np
import pytest

from memposer import geometry as G
from memposer.data import imc


def _records(rng):
    R = G.random_rotation(rng, 3)
    t = rng.normal(size=(3, 3))
    return [
        imc.PoseRecord("ds1", "sceneA", "a.png", R[0], t[0]),
        imc.PoseRecord("ds1", "outliers", "b.jpg"),
        imc.PoseRecord("ds2", "s", "c.JPG", R[2], t[2]),
    ]


def test_submission_roundtrip_exact_format(tmp_path):
    recs = _records(np.random.default_rng(1))
    path = imc.write_submission(recs, tmp_path / "submission.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "image_id,dataset,scene,image,rotation_matrix,translation_vector"
    assert lines[2] == "ds1_b.jpg,ds1,outliers,b.jpg,nan;nan;nan;nan;nan;nan;nan;nan;nan,nan;nan;nan"
    assert len(lines[1].split(",")[4].split(";")) == 9
    back = imc.read_submission(path)
    assert [(r.dataset, r.scene, r.image) for r in back] == [(r.dataset, r.scene, r.image) for r in recs]
    np.testing.assert_array_equal(back[0].R, recs[0].R)  # repr() keeps doubles exact
    np.testing.assert_array_equal(back[2].t, recs[2].t)
    assert not back[1].has_pose and back[1].R is None


def test_read_rejects_wrong_count(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("image_id,dataset,scene,image,rotation_matrix,translation_vector\nx,d,s,i,1;2;3,0;0;0\n")
    with pytest.raises(ValueError, match="expected 9"):
        imc.read_poses(p)


def test_thresholds_roundtrip(tmp_path):
    th = {"ds": {"a": [0.025, 0.05, 0.1], "b": [1.0, 2.0]}}
    imc.write_thresholds(th, tmp_path / "t.csv")
    assert imc.read_thresholds(tmp_path / "t.csv") == th


def test_scan_is_case_insensitive_and_ignores_other_files(tmp_path):
    (tmp_path / "ds1").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ["b.JPG", "a.png", "notes.txt", ".hidden.png", "c.Jpeg"]:
        (tmp_path / "ds1" / name).write_bytes(b"x")
    out = imc.scan_dataset_folder(tmp_path)
    assert out == {"ds1": ["a.png", "b.JPG", "c.Jpeg"], "empty": []}
    with pytest.raises(FileNotFoundError):
        imc.scan_dataset_folder(tmp_path / "nope")


def test_complete_submission_fills_missing_and_drops_duplicates():
    recs = _records(np.random.default_rng(2))
    dup = imc.PoseRecord("ds1", "other", "a.png")
    out = imc.complete_submission(recs + [dup], {"ds1": ["a.png", "b.jpg", "z.png"], "ds2": ["c.JPG"]})
    assert [(r.dataset, r.image) for r in out] == [("ds1", "a.png"), ("ds1", "b.jpg"), ("ds1", "z.png"), ("ds2", "c.JPG")]
    assert out[0].scene == "sceneA"  # the first row wins
    assert out[2].scene == "outliers" and not out[2].has_pose
