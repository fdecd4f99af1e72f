"""benchmarks/reference_check.py on pycolmap's synthetic scene: exact matches, known poses."""
import sys
from pathlib import Path

import numpy as np
import pytest

from memposer.pipeline import seeding
from pycolmap_scenes import synthetic_database  # tests/pipeline/pycolmap_scenes.py

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def check(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import reference_check as mod  # noqa: PLC0415
    yield mod
    sys.modules.pop("reference_check", None)


def test_a_flipped_reference_pose_is_found_by_its_pairs(tmp_path, check):
    """The true poses agree with every consecutive pair's essential matrix; one image's reference
    turned 180 degrees about its camera's x axis (a flip as beer's reference has) disagrees by ~180
    degrees with exactly its two pairs, and a submission holding the true poses is flagged nowhere."""
    db_path = tmp_path / "scene.db"
    truth = synthetic_database(db_path, num_images=8, num_points=300)
    poses = seeding.reconstruction_poses(truth)
    names = sorted(poses)
    ref = {n: poses[n][0] for n in names}
    rows = check.pair_checks(db_path, ref, "consecutive", submission=ref)
    assert len(rows) == len(names) - 1
    assert max(r["ref_vs_e"] for r in rows) < 1.0, rows
    flipped = dict(ref)
    flipped[names[3]] = np.diag([1.0, -1.0, -1.0]) @ ref[names[3]]
    rows = check.pair_checks(db_path, flipped, "consecutive", submission=ref)
    bad = {(r["a"], r["b"]) for r in rows if r["ref_vs_e"] > 150}
    assert bad == {(names[2], names[3]), (names[3], names[4])}, rows
    assert max(r["sub_vs_e"] for r in rows) < 1.0
    assert len(check.pair_checks(db_path, ref, "verified")) >= len(rows)
