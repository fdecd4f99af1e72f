"""benchmarks/real.py: a labelled real split's chosen datasets laid out for benchmarks/pipeline.py."""
import csv
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def real(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import real as mod  # noqa: PLC0415
    yield mod
    for name in ("real", "pipeline"):  # benchmarks/pipeline.py came in as a top-level module
        sys.modules.pop(name, None)


def _split(root: Path) -> Path:
    for ds, names in (("a", ["x.jpg", "y.jpg"]), ("b", ["z.jpg"])):
        (root / "train" / ds).mkdir(parents=True)
        for n in names:
            (root / "train" / ds / n).write_bytes(b"jpeg")
    (root / "train_labels.csv").write_text(
        "dataset,scene,image,rotation_matrix,translation_vector\n"
        "a,s,x.jpg,1;0;0;0;1;0;0;0;1,0;0;0\na,s,y.jpg,1;0;0;0;1;0;0;0;1,1;0;0\nb,t,z.jpg,1;0;0;0;1;0;0;0;1,0;0;0\n")
    (root / "train_thresholds.csv").write_text("dataset,scene,thresholds\na,s,0.1;0.2\nb,t,0.3\n")
    return root


def test_prepare_links_the_chosen_datasets_and_keeps_only_their_rows(tmp_path, real):
    src = _split(tmp_path / "src")
    out = tmp_path / "out"
    assert real.prepare(src, out, ["a"]) == 2
    assert (out / "train" / "a").is_symlink() and sorted(p.name for p in (out / "train" / "a").iterdir()) == ["x.jpg", "y.jpg"]
    assert not (out / "train" / "b").exists()
    with open(out / "train_labels.csv") as f:
        assert [r["image"] for r in csv.DictReader(f)] == ["x.jpg", "y.jpg"]
    with open(out / "train_thresholds.csv") as f:
        assert [(r["dataset"], r["thresholds"]) for r in csv.DictReader(f)] == [("a", "0.1;0.2")]


def test_prepare_names_a_missing_dataset(tmp_path, real):
    with pytest.raises(SystemExit, match="nope"):
        real.prepare(_split(tmp_path / "src"), tmp_path / "out", ["a", "nope"])
